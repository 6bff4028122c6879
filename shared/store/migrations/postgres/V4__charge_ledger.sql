-- The books decide every charge (ADR 53): each charge they learn of, from a paid order or
-- from buy handing over one it cannot match to a live payment attempt, is recorded here once,
-- keyed by the provider's reference. Kept: it paid its order, confirmed with it (orders). Owed
-- back: every other (refunds). The key also serialises the two ways a charge arrives: a
-- decision and a settlement of the same charge never both commit unaware of each other.
CREATE TABLE charges (
    payment_ref  TEXT PRIMARY KEY,
    order_id     UUID        NOT NULL,
    amount_cents BIGINT      NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The charges the books knew before the ledger.
INSERT INTO charges (payment_ref, order_id, amount_cents, recorded_at)
    SELECT payment_ref, id, amount_cents, persisted_at FROM orders
    ON CONFLICT (payment_ref) DO NOTHING;
INSERT INTO charges (payment_ref, order_id, amount_cents, recorded_at)
    SELECT payment_ref, order_id, amount_cents, owed_at FROM refunds
    ON CONFLICT (payment_ref) DO NOTHING;
