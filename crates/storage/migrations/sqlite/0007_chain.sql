-- The chain pipeline: which tokens should exist, where they are on their way
-- to the chain, and the transactions sent for them. Owned by `entrada-chain`
-- (crates/chain/src/pipeline). Ticketing reads `chain_tokens` and
-- `chain_collections` (LEFT JOIN, read only) to show a ticket's token.
--
-- Instants are unix milliseconds; addresses and hashes are 0x-hex text;
-- token ids are the tickets' serials.

-- One ERC-721 collection per event. `address` is the deterministic clone
-- address, known before the creation transaction lands.
CREATE TABLE chain_collections (
    event_id      TEXT    PRIMARY KEY,
    -- `embedded` or `rpc`, and the EIP-155 chain id
    network       TEXT    NOT NULL,
    chain_id      BIGINT  NOT NULL,
    event_key     TEXT    NOT NULL,
    address       TEXT,
    -- pending | confirmed
    state         TEXT    NOT NULL,
    tx_hash       TEXT,
    block_number  BIGINT,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    last_error    TEXT,
    available_at  BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX chain_collections_due ON chain_collections (state, available_at);

-- One row per ticket: the ticket id is the idempotency key of its mint, the
-- token id its serial. The intended owner is `external_address` when the
-- ticket was exported, else the custodial address of `holder_id`.
CREATE TABLE chain_tokens (
    ticket_id         TEXT    PRIMARY KEY,
    event_id          TEXT    NOT NULL,
    token_id          BIGINT  NOT NULL,
    holder_id         TEXT,
    external_address  TEXT,
    -- the address the token was minted or last moved to (resolved at send time)
    owner_address     TEXT,
    -- pending | submitted | confirmed | burned
    state             TEXT    NOT NULL,
    -- chain_transactions.id of the mint in flight or done
    tx_id             BIGINT,
    tx_hash           TEXT,
    block_number      BIGINT,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    last_error        TEXT,
    available_at      BIGINT  NOT NULL,
    attended          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    UNIQUE (event_id, token_id)
);
CREATE INDEX chain_tokens_due ON chain_tokens (state, event_id, available_at);
CREATE INDEX chain_tokens_tx ON chain_tokens (tx_id);

-- Transfers, burns and attended marks, applied in `id` order per ticket and
-- only once the ticket's mint is confirmed. `source` makes the consumer
-- idempotent (outbox event id and ticket, or the reconciler's key).
CREATE TABLE chain_ops (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id     TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    -- transfer | burn | attend
    kind          TEXT    NOT NULL,
    -- a transfer's destination: a user's custodial address, or an address
    to_user       TEXT,
    to_address    TEXT,
    source        TEXT    NOT NULL UNIQUE,
    -- pending | submitted | done | failed
    state         TEXT    NOT NULL,
    tx_id         BIGINT,
    tx_hash       TEXT,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    last_error    TEXT,
    available_at  BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX chain_ops_due ON chain_ops (state, available_at);
CREATE INDEX chain_ops_ticket ON chain_ops (ticket_id, id);

-- Every transaction the pipeline sends, written (`sending`) before the send
-- and completed after it, so a crash or a lost answer in between is found
-- and resolved by reading the chain before anything is sent again.
CREATE TABLE chain_transactions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- mint_batch | transfer | burn | attend
    kind          TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    -- sending | confirmed | reverted | unknown | resolved
    state         TEXT    NOT NULL,
    -- the process that sends it; another process resolves it only after `lease_until`
    instance      TEXT    NOT NULL,
    lease_until   BIGINT  NOT NULL,
    items         BIGINT  NOT NULL,
    tx_hash       TEXT,
    block_number  BIGINT,
    gas_used      BIGINT,
    error         TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX chain_transactions_open ON chain_transactions (state, lease_until);
