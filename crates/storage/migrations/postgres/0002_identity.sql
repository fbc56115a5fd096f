-- Identity: users, logins, keys, one-time tokens, organization membership.

CREATE TABLE users (
    id              TEXT    PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    display_name    TEXT    NOT NULL,
    platform_role   TEXT    NOT NULL DEFAULT 'fan',
    email_verified  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT  NOT NULL
);
-- The local part of an address is kept as typed, but two accounts that differ
-- only in case would be one mailbox in practice: uniqueness ignores case.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

CREATE TABLE org_members (
    organization_id  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL REFERENCES users (id),
    role             TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);

-- Ed25519 keys that sign access tokens. `slot` is 'current' for the one key
-- that signs and NULL for retired keys (still published until their tokens
-- expire); the UNIQUE slot lets concurrent processes race to create the first
-- key with ON CONFLICT and all end up using the winner's.
CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY,
    slot         TEXT    UNIQUE,
    private_key  TEXT    NOT NULL, -- PKCS#8 DER, base64url
    public_key   TEXT    NOT NULL, -- raw 32 bytes, base64url
    created_at   BIGINT  NOT NULL,
    retired_at   BIGINT
);

-- A login: one refresh-token family. Revoking it ends every token of the family.
CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES users (id),
    created_at      BIGINT  NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Refresh tokens, stored only as SHA-256 digests. Each is single-use: `used_at`
-- is set when it is rotated, and presenting it again revokes the session.
CREATE TABLE refresh_tokens (
    digest      TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id),
    user_id     TEXT    NOT NULL REFERENCES users (id),
    issued_at   BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Email verification and password reset tokens (digests only, single use).
CREATE TABLE one_time_tokens (
    digest      TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    purpose     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id, purpose);

-- Failed password logins per address (lower-cased), known or not, so that
-- throttling itself does not reveal which addresses have accounts.
CREATE TABLE login_throttle (
    email_key     TEXT    PRIMARY KEY,
    window_start  BIGINT  NOT NULL,
    failures      BIGINT  NOT NULL
);
