-- Outbox, audit log and idempotency keys: the platform tables every context uses.
-- Instants are unix milliseconds (BIGINT); ids are UUID text.

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type  TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE outbox_queue (
    consumer      TEXT    NOT NULL,
    event_id      BIGINT  NOT NULL REFERENCES outbox (id),
    available_at  BIGINT  NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX outbox_queue_due ON outbox_queue (consumer, available_at);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT  NOT NULL,
    actor_type   TEXT    NOT NULL,
    actor_id     TEXT,
    action       TEXT    NOT NULL,
    object_type  TEXT    NOT NULL,
    object_id    TEXT    NOT NULL,
    details      TEXT    NOT NULL
);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id);

CREATE TABLE idempotency_keys (
    scope         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    status        BIGINT,
    response      TEXT,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);
