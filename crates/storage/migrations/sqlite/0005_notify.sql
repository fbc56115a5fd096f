-- Notify: the delivery log of outgoing mail, one row per (outbox event, template).

CREATE TABLE mail_deliveries (
    id          TEXT    PRIMARY KEY,
    event_id    BIGINT  NOT NULL,
    template    TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    transport   TEXT    NOT NULL,
    sent_at     BIGINT  NOT NULL,
    UNIQUE (event_id, template)
);
CREATE INDEX mail_deliveries_recipient ON mail_deliveries (recipient, sent_at);
