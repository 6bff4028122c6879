-- What each consume-order process was last answered by Redis' `marks` for an event (ADR 56;
-- see the PostgreSQL migration of the same name).
CREATE TABLE GateMarks (
  EventId STRING(64)  NOT NULL,
  Writer  STRING(64)  NOT NULL,
  Epoch   STRING(MAX) NOT NULL,
  Mark    INT64       NOT NULL,
  SavedAt TIMESTAMP   NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (EventId, Writer);
