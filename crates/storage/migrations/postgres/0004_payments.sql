-- Payments: payment records, provider webhook receipts, the double-entry
-- ledger, and the embedded sandbox provider's own tables.
-- Money is BIGINT minor units with a TEXT currency; instants are unix ms.

-- One row per payment attempt. `status` only moves forward:
--   created -> pending -> succeeded -> refunded; created/pending -> failed
--   (and failed -> succeeded when a provider captures after a failed try).
CREATE TABLE payments (
    id                TEXT    PRIMARY KEY,
    -- opaque payer-side object (`order:<uuid>`); one payment per reference
    reference         TEXT    NOT NULL UNIQUE,
    organization_id   TEXT    NOT NULL,
    amount_minor      BIGINT  NOT NULL,
    currency          TEXT    NOT NULL,
    description       TEXT    NOT NULL,
    return_url        TEXT    NOT NULL,
    -- sandbox | stripe
    provider          TEXT    NOT NULL,
    -- the provider's checkout object (sandbox charge, Stripe Checkout Session)
    provider_ref      TEXT,
    -- what a refund is issued against (sandbox charge, Stripe PaymentIntent)
    capture_ref       TEXT,
    checkout_url      TEXT,
    -- created | pending | succeeded | failed | refunded
    status            TEXT    NOT NULL,
    failure_reason    TEXT,
    -- a refund asked for (by the refund consumer) but not yet done
    refund_requested_at BIGINT,
    refund_next_at    BIGINT,
    refund_attempts   BIGINT  NOT NULL DEFAULT 0,
    refund_reason     TEXT,
    refund_ref        TEXT,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);
CREATE INDEX payments_provider_ref ON payments (provider, provider_ref);
CREATE INDEX payments_capture_ref ON payments (provider, capture_ref);
CREATE INDEX payments_refund_due ON payments (refund_next_at);

-- Provider events already applied: a replayed delivery finds its row here.
CREATE TABLE webhook_receipts (
    provider     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    payment_id   TEXT,
    received_at  BIGINT  NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Double-entry ledger. Entries are signed: debit positive, credit negative;
-- the entries of one transaction sum to zero per currency.
CREATE TABLE ledger_transactions (
    id          TEXT    PRIMARY KEY,
    -- capture | refund
    kind        TEXT    NOT NULL,
    payment_id  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    UNIQUE (payment_id, kind)
);

CREATE TABLE ledger_entries (
    id              BIGSERIAL PRIMARY KEY,
    transaction_id  TEXT    NOT NULL REFERENCES ledger_transactions (id),
    account         TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL,
    currency        TEXT    NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account, currency);

-- The sandbox provider's state: what a real provider keeps on its side.
CREATE TABLE sandbox_charges (
    id            TEXT    PRIMARY KEY,
    -- the creating request's idempotency key (our payment id)
    payment_id    TEXT    NOT NULL UNIQUE,
    reference     TEXT    NOT NULL,
    amount_minor  BIGINT  NOT NULL,
    currency      TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    return_url    TEXT    NOT NULL,
    -- open | pending | succeeded | failed | refunded
    status        TEXT    NOT NULL,
    card_last4    TEXT,
    decline_code  TEXT,
    refund_id     TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX sandbox_charges_status ON sandbox_charges (status);

-- Outgoing sandbox webhooks, delivered at least once with backoff. A
-- deliberate duplicate is a second row with the same event_id.
CREATE TABLE sandbox_webhooks (
    id            BIGSERIAL PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    due_at        BIGINT  NOT NULL,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    last_error    TEXT,
    delivered_at  BIGINT,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX sandbox_webhooks_due ON sandbox_webhooks (delivered_at, due_at);
