-- Ticketing core: organizations, events, ticket types, quotas, holds, orders, tickets.
-- Inventory discipline (invariant 1): quotas.used counts sold + pending + held
-- positions and only ever changes through the guarded statement
--   UPDATE quotas SET used = used + n WHERE id = ? AND used + n <= size
-- inside the transaction that creates or releases the positions.

CREATE TABLE organizations (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    slug        TEXT    NOT NULL UNIQUE,
    created_by  TEXT    NOT NULL REFERENCES users (id),
    created_at  BIGINT  NOT NULL
);

CREATE TABLE events (
    id               TEXT    PRIMARY KEY,
    organization_id  TEXT    NOT NULL REFERENCES organizations (id),
    name             TEXT    NOT NULL,
    description      TEXT    NOT NULL DEFAULT '',
    venue_name       TEXT    NOT NULL,
    venue_address    TEXT    NOT NULL DEFAULT '',
    venue_city       TEXT    NOT NULL DEFAULT '',
    venue_country    TEXT    NOT NULL DEFAULT '',
    timezone         TEXT    NOT NULL,
    starts_at        BIGINT  NOT NULL,
    ends_at          BIGINT  NOT NULL,
    doors_open_at    BIGINT,
    capacity         BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    -- draft | published | on_sale | sales_closed | ended | cancelled
    status           TEXT    NOT NULL,
    -- resale policy, stored now and enforced by the market
    transfers_allowed      BOOLEAN NOT NULL DEFAULT TRUE,
    resale_allowed         BOOLEAN NOT NULL DEFAULT TRUE,
    resale_price_cap_bps   BIGINT,
    resale_price_cap_minor BIGINT,
    resale_royalty_bps     BIGINT  NOT NULL DEFAULT 0,
    resale_fee_bps         BIGINT  NOT NULL DEFAULT 0,
    resale_max_per_ticket  BIGINT,
    resale_opens_at        BIGINT,
    resale_closes_at       BIGINT,
    resale_freeze_minutes  BIGINT  NOT NULL DEFAULT 0,
    export_allowed         BOOLEAN NOT NULL DEFAULT FALSE,
    export_after           BIGINT,
    -- the next ticket serial (the future token id) for this event
    next_serial      BIGINT  NOT NULL DEFAULT 1,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX events_org ON events (organization_id, starts_at);
CREATE INDEX events_public ON events (status, starts_at);

CREATE TABLE ticket_types (
    id               TEXT    PRIMARY KEY,
    event_id         TEXT    NOT NULL REFERENCES events (id),
    name             TEXT    NOT NULL,
    description      TEXT    NOT NULL DEFAULT '',
    price_minor      BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    min_per_order    BIGINT  NOT NULL DEFAULT 1,
    max_per_order    BIGINT  NOT NULL DEFAULT 10,
    sale_starts_at   BIGINT,
    sale_ends_at     BIGINT,
    -- JSON array of zone names this type admits (used by check-in)
    zones            TEXT    NOT NULL DEFAULT '[]',
    printable        BOOLEAN NOT NULL DEFAULT FALSE,
    position         BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX ticket_types_event ON ticket_types (event_id, position);

CREATE TABLE quotas (
    id          TEXT    PRIMARY KEY,
    event_id    TEXT    NOT NULL REFERENCES events (id),
    name        TEXT    NOT NULL,
    size        BIGINT  NOT NULL CHECK (size >= 0),
    used        BIGINT  NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- the event's capacity quota covers every ticket type of the event
    is_capacity BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    CHECK (used <= size)
);
CREATE INDEX quotas_event ON quotas (event_id);

CREATE TABLE quota_ticket_types (
    quota_id        TEXT NOT NULL REFERENCES quotas (id),
    ticket_type_id  TEXT NOT NULL REFERENCES ticket_types (id),
    PRIMARY KEY (quota_id, ticket_type_id)
);
CREATE INDEX quota_ticket_types_type ON quota_ticket_types (ticket_type_id);

CREATE TABLE holds (
    id          TEXT    PRIMARY KEY,
    event_id    TEXT    NOT NULL REFERENCES events (id),
    user_id     TEXT    NOT NULL REFERENCES users (id),
    -- active | converted | released | expired
    status      TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX holds_due ON holds (status, expires_at);
CREATE INDEX holds_user ON holds (user_id);

CREATE TABLE hold_items (
    hold_id         TEXT    NOT NULL REFERENCES holds (id),
    ticket_type_id  TEXT    NOT NULL REFERENCES ticket_types (id),
    quantity        BIGINT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (hold_id, ticket_type_id)
);

CREATE TABLE orders (
    id                TEXT    PRIMARY KEY,
    event_id          TEXT    NOT NULL REFERENCES events (id),
    organization_id   TEXT    NOT NULL REFERENCES organizations (id),
    buyer_id          TEXT    NOT NULL REFERENCES users (id),
    hold_id           TEXT    NOT NULL UNIQUE REFERENCES holds (id),
    -- pending | paid | refunded | expired | cancelled
    status            TEXT    NOT NULL,
    total_minor       BIGINT  NOT NULL,
    currency          TEXT    NOT NULL,
    payment_id        TEXT,
    checkout_url      TEXT,
    payment_deadline  BIGINT  NOT NULL,
    last_payment_error TEXT,
    created_at        BIGINT  NOT NULL,
    paid_at           BIGINT,
    closed_at         BIGINT
);
CREATE INDEX orders_buyer ON orders (buyer_id, created_at);
CREATE INDEX orders_event ON orders (event_id, status);
CREATE INDEX orders_due ON orders (status, payment_deadline);

CREATE TABLE order_positions (
    id              TEXT    PRIMARY KEY,
    order_id        TEXT    NOT NULL REFERENCES orders (id),
    ticket_type_id  TEXT    NOT NULL REFERENCES ticket_types (id),
    price_minor     BIGINT  NOT NULL,
    currency        TEXT    NOT NULL,
    position        BIGINT  NOT NULL
);
CREATE INDEX order_positions_order ON order_positions (order_id, position);

CREATE TABLE tickets (
    id               TEXT    PRIMARY KEY,
    event_id         TEXT    NOT NULL REFERENCES events (id),
    ticket_type_id   TEXT    NOT NULL REFERENCES ticket_types (id),
    order_id         TEXT    NOT NULL REFERENCES orders (id),
    -- exactly one ticket per order position (invariant 2)
    position_id      TEXT    NOT NULL UNIQUE REFERENCES order_positions (id),
    serial           BIGINT  NOT NULL,
    holder_id        TEXT    NOT NULL REFERENCES users (id),
    -- valid | cancelled
    status           TEXT    NOT NULL,
    generation       BIGINT  NOT NULL DEFAULT 1,
    issued_at        BIGINT  NOT NULL,
    UNIQUE (event_id, serial)
);
CREATE INDEX tickets_holder ON tickets (holder_id, issued_at);
CREATE INDEX tickets_order ON tickets (order_id);
