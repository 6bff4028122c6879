-- Every refund owed to a fan, kept until the payment provider confirms it: an order the books
-- rejected after payment, or an approval that came for an attempt that no longer counted. One
-- row per charge (a provider refunds a charge once). consume-order's refunder claims due rows
-- (next_at) with a lease that grows with each attempt, and marks them refunded.
CREATE TABLE refunds (
    payment_ref  TEXT PRIMARY KEY,
    order_id     UUID        NOT NULL,
    amount_cents BIGINT      NOT NULL CHECK (amount_cents >= 0),
    owed_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts     INT         NOT NULL DEFAULT 0,
    next_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    refunded_at  TIMESTAMPTZ
);

CREATE INDEX refunds_due ON refunds (next_at) WHERE refunded_at IS NULL;
