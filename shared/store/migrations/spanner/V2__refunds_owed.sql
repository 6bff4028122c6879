-- Every refund owed to a fan, kept until the payment provider confirms it (see the PostgreSQL
-- migration of the same name).
CREATE TABLE Refunds (
  PaymentRef  STRING(MAX) NOT NULL,
  OrderId     STRING(36)  NOT NULL,
  AmountCents INT64       NOT NULL,
  OwedAt      TIMESTAMP   NOT NULL,
  Attempts    INT64       NOT NULL,
  -- When it is due again; NULL once done (the index then forgets it).
  NextAt      TIMESTAMP,
  RefundedAt  TIMESTAMP,
) PRIMARY KEY (PaymentRef);

CREATE NULL_FILTERED INDEX RefundsDue ON Refunds (NextAt);
