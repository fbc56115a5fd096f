-- Wallet: custodial keys (envelope-encrypted), external addresses linked with
-- Sign-In with Ethereum, exports of tickets to them, and organizers' own
-- collectible images. Instants are unix ms; addresses are 0x + 40 lower-case
-- hex digits; binary values are standard base64 text, so both backends store
-- them alike.

-- One secp256k1 key per user (invariant 7: never stored unencrypted).
-- `key_ciphertext` is AES-256-GCM of the 32-byte private key under a random
-- data key, with associated data binding the user id and the address; the
-- data key itself is AES-256-GCM-wrapped (`dek_wrapped`) by the master key
-- `master_key_id`, which lives in configuration, never in the database.
CREATE TABLE wallet_keys (
    user_id         TEXT    PRIMARY KEY REFERENCES users (id),
    address         TEXT    NOT NULL UNIQUE,
    key_nonce       TEXT    NOT NULL,
    key_ciphertext  TEXT    NOT NULL,
    master_key_id   TEXT    NOT NULL,
    dek_nonce       TEXT    NOT NULL,
    dek_wrapped     TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    rewrapped_at    BIGINT
);
CREATE INDEX wallet_keys_master ON wallet_keys (master_key_id);

-- Single-use Sign-In with Ethereum nonces: used_at is set by the one
-- conditional update that accepts a signed message.
CREATE TABLE wallet_link_nonces (
    nonce       TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    -- the exact EIP-4361 message the server asked the wallet to sign
    message     TEXT    NOT NULL,
    issued_at   BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX wallet_link_nonces_user ON wallet_link_nonces (user_id, issued_at);

-- An external address proven to belong to a user. One account per address.
CREATE TABLE wallet_links (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    address     TEXT    NOT NULL UNIQUE,
    chain_id    BIGINT  NOT NULL,
    linked_at   BIGINT  NOT NULL
);
CREATE INDEX wallet_links_user ON wallet_links (user_id, linked_at);

-- A ticket's token taken out to a linked address; at most one per ticket.
CREATE TABLE ticket_exports (
    id          TEXT    PRIMARY KEY,
    ticket_id   TEXT    NOT NULL UNIQUE REFERENCES tickets (id),
    event_id    TEXT    NOT NULL,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    to_address  TEXT    NOT NULL,
    -- the holder generation the export moved the ticket to
    generation  BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX ticket_exports_user ON ticket_exports (user_id, created_at);

-- An organizer's own image for a ticket type's collectible (PNG, JPEG or
-- WebP; never SVG, which can carry script). Replaces the generated art.
CREATE TABLE collectible_images (
    ticket_type_id  TEXT    PRIMARY KEY REFERENCES ticket_types (id),
    event_id        TEXT    NOT NULL,
    content_type    TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    -- hex SHA-256 of the bytes: the ETag, and part of the image URL
    sha256          TEXT    NOT NULL,
    size            BIGINT  NOT NULL,
    uploaded_by     TEXT    NOT NULL REFERENCES users (id),
    uploaded_at     BIGINT  NOT NULL
);
CREATE INDEX collectible_images_event ON collectible_images (event_id);
