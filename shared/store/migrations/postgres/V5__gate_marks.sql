-- What each consume-order process was last answered by Redis' `marks` for an event (ADR 56):
-- the mark only grows within an epoch of the event (its order-id salt), so a Redis whose field
-- is below what the books saved went back in time, and lost writes of that process, even
-- after the process is gone. Saved every second by each process's watcher; read by all.
CREATE TABLE gate_marks (
    event_id TEXT        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    writer   TEXT        NOT NULL,
    epoch    TEXT        NOT NULL,
    mark     BIGINT      NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, writer)
);
