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

CREATE TABLE org_members (
    organization_id  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL REFERENCES users (id),
    role             TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);
