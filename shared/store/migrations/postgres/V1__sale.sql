-- The sale's durable record. Capacity is physical: one pre-generated row per ticket, each
-- claimable once (order_id set), so the database cannot sell more than it has, and concurrent
-- orders claim different rows (FOR UPDATE SKIP LOCKED) instead of contending on one counter.
CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    name          TEXT        NOT NULL,
    venue         TEXT        NOT NULL,
    sale_opens_at TIMESTAMPTZ NOT NULL,
    catalog       TEXT        NOT NULL
);

CREATE TABLE ticket_types (
    event_id           TEXT   NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    id                 TEXT   NOT NULL,
    name               TEXT   NOT NULL,
    price_cents        BIGINT NOT NULL CHECK (price_cents >= 0),
    capacity           INT    NOT NULL CHECK (capacity > 0),
    per_customer_limit INT    NOT NULL CHECK (per_customer_limit > 0),
    hold_seconds       INT    NOT NULL CHECK (hold_seconds > 0),
    PRIMARY KEY (event_id, id)
);

CREATE TABLE orders (
    id             UUID PRIMARY KEY,
    event_id       TEXT        NOT NULL,
    ticket_type_id TEXT        NOT NULL,
    quantity       INT         NOT NULL CHECK (quantity > 0),
    email          TEXT        NOT NULL,
    amount_cents   BIGINT      NOT NULL,
    payment_ref    TEXT        NOT NULL,
    paid_at        TIMESTAMPTZ NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('confirmed', 'rejected')),
    persisted_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (event_id, ticket_type_id) REFERENCES ticket_types (event_id, id) ON DELETE CASCADE
);

CREATE TABLE tickets (
    id             UUID PRIMARY KEY,
    event_id       TEXT NOT NULL,
    ticket_type_id TEXT NOT NULL,
    order_id       UUID,
    code           TEXT UNIQUE,
    claimed_at     TIMESTAMPTZ,
    FOREIGN KEY (event_id, ticket_type_id) REFERENCES ticket_types (event_id, id) ON DELETE CASCADE,
    CHECK ((order_id IS NULL) = (code IS NULL))
);

CREATE INDEX tickets_free ON tickets (event_id, ticket_type_id) WHERE order_id IS NULL;
CREATE INDEX tickets_by_order ON tickets (order_id) WHERE order_id IS NOT NULL;
