-- Orders arrive in batches (ADR 34): capacity becomes one counter per ticket type, updated once
-- per batch, instead of one pre-generated row per ticket claimed one order at a time. The
-- database still refuses to sell beyond capacity by itself: `sold` may never exceed
-- `capacity`. A ticket row is written when it is sold, under its order.
ALTER TABLE ticket_types ADD COLUMN sold INT NOT NULL DEFAULT 0;
UPDATE ticket_types tt SET sold = (
    SELECT count(*) FROM tickets t
    WHERE t.event_id = tt.event_id AND t.ticket_type_id = tt.id AND t.order_id IS NOT NULL);
ALTER TABLE ticket_types ADD CONSTRAINT ticket_types_sold_within_capacity
    CHECK (sold >= 0 AND sold <= capacity);

CREATE TABLE sold_tickets (
    code     TEXT PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE
);
INSERT INTO sold_tickets (code, order_id)
    SELECT code, order_id FROM tickets WHERE order_id IS NOT NULL;
DROP TABLE tickets;
ALTER TABLE sold_tickets RENAME TO tickets;
CREATE INDEX tickets_by_order ON tickets (order_id);
