-- Every charge the books learn of, once, keyed by the provider's reference (ADR 53; see the
-- PostgreSQL migration of the same name). Kept: it paid its order, confirmed with it (Orders).
-- Owed back: every other (Refunds). A decision and a settlement of one charge both read its
-- key in their read-write transactions, so Spanner serialises them. Charges the books knew
-- before this table are not copied in (the migration runner applies DDL only): a settlement
-- reads the order itself for its verdict, so they are still kept; the money audit reports them
-- as unknown to the books until `ops audit --settle-unknown` enters them (keeping the one that
-- paid its order).
CREATE TABLE Charges (
  PaymentRef  STRING(MAX) NOT NULL,
  OrderId     STRING(36)  NOT NULL,
  AmountCents INT64       NOT NULL,
  RecordedAt  TIMESTAMP   NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (PaymentRef);
