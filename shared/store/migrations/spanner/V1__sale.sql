-- The sale's durable record on Cloud Spanner (GoogleSQL), the same books as
-- ../postgres/V1__sale.sql in Spanner's shape (docs/DECISIONS.md, ADR 24):
-- * no monotonically increasing key: orders are keyed by their random UUID, tickets live
--   under their order, ticket types and shards under their event;
-- * capacity is a sharded counter: each ticket type's capacity is split over TicketShards
--   rows, and the consumer's read-write transaction takes its tickets from one random shard,
--   so concurrent orders lock different rows instead of one hot counter;
-- * a ticket row is written when it is sold (under its order), its code unique by index.
-- `ops migrate` applies each statement whose table or index does not exist yet.
CREATE TABLE Events (
  EventId     STRING(64)  NOT NULL,
  Name        STRING(MAX) NOT NULL,
  Venue       STRING(MAX) NOT NULL,
  SaleOpensAt TIMESTAMP   NOT NULL,
  Catalog     STRING(MAX) NOT NULL,
) PRIMARY KEY (EventId);

CREATE TABLE TicketTypes (
  EventId          STRING(64)  NOT NULL,
  TicketTypeId     STRING(64)  NOT NULL,
  Name             STRING(MAX) NOT NULL,
  PriceCents       INT64       NOT NULL,
  Capacity         INT64       NOT NULL,
  PerCustomerLimit INT64       NOT NULL,
  HoldSeconds      INT64       NOT NULL,
  Shards           INT64       NOT NULL,
  CONSTRAINT TicketTypesPrice CHECK (PriceCents >= 0),
  CONSTRAINT TicketTypesCapacity CHECK (Capacity > 0),
) PRIMARY KEY (EventId, TicketTypeId),
  INTERLEAVE IN PARENT Events ON DELETE CASCADE;

-- Sum of Remaining over a type's shards + tickets sold of that type == Capacity.
CREATE TABLE TicketShards (
  EventId      STRING(64) NOT NULL,
  TicketTypeId STRING(64) NOT NULL,
  Shard        INT64      NOT NULL,
  Remaining    INT64      NOT NULL,
  CONSTRAINT TicketShardsRemaining CHECK (Remaining >= 0),
) PRIMARY KEY (EventId, TicketTypeId, Shard),
  INTERLEAVE IN PARENT TicketTypes ON DELETE CASCADE;

CREATE TABLE Orders (
  OrderId      STRING(36)  NOT NULL,
  EventId      STRING(64)  NOT NULL,
  TicketTypeId STRING(64)  NOT NULL,
  Quantity     INT64       NOT NULL,
  Email        STRING(MAX) NOT NULL,
  AmountCents  INT64       NOT NULL,
  PaymentRef   STRING(MAX) NOT NULL,
  PaidAt       TIMESTAMP   NOT NULL,
  Status       STRING(16)  NOT NULL,
  PersistedAt  TIMESTAMP   NOT NULL OPTIONS (allow_commit_timestamp = true),
  CONSTRAINT OrdersQuantity CHECK (Quantity > 0),
  CONSTRAINT OrdersStatus CHECK (Status IN ('confirmed', 'rejected')),
) PRIMARY KEY (OrderId);

CREATE TABLE Tickets (
  OrderId      STRING(36) NOT NULL,
  Code         STRING(32) NOT NULL,
  EventId      STRING(64) NOT NULL,
  TicketTypeId STRING(64) NOT NULL,
  Shard        INT64      NOT NULL,
  ClaimedAt    TIMESTAMP  NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (OrderId, Code),
  INTERLEAVE IN PARENT Orders ON DELETE CASCADE;

-- A code is handed out once: a collision fails the commit and the consumer draws again.
CREATE UNIQUE INDEX TicketsByCode ON Tickets (Code);
