-- Market: gifts between users, resale listings, resale purchases, seller
-- payouts and the ticket's transfer history (provenance).
-- Money is BIGINT minor units with a TEXT currency; instants are unix ms.
-- Ownership itself lives in tickets.holder_id / tickets.generation and only
-- moves through a conditional update that names the expected holder and
-- generation, in the same transaction as the rows below.

-- A holder offers a ticket to someone by email address.
CREATE TABLE gifts (
    id               TEXT    PRIMARY KEY,
    ticket_id        TEXT    NOT NULL REFERENCES tickets (id),
    event_id         TEXT    NOT NULL,
    sender_id        TEXT    NOT NULL REFERENCES users (id),
    -- normalised as typed (domain lower-cased); matched case-insensitively
    recipient_email  TEXT    NOT NULL,
    -- the account the offer was made to, when one existed at offer time
    recipient_id     TEXT,
    -- SHA-256 of the claim token mailed to the recipient
    claim_digest     TEXT    NOT NULL,
    -- the ticket generation the offer was made at; acceptance requires it
    generation       BIGINT  NOT NULL,
    -- pending | accepted | declined | cancelled | expired | void
    status           TEXT    NOT NULL,
    expires_at       BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    closed_at        BIGINT,
    accepted_by      TEXT
);
-- at most one pending offer per ticket
CREATE UNIQUE INDEX gifts_one_pending ON gifts (ticket_id) WHERE status = 'pending';
CREATE INDEX gifts_due ON gifts (status, expires_at);
CREATE INDEX gifts_recipient ON gifts (recipient_email, status);
CREATE INDEX gifts_sender ON gifts (sender_id, created_at);

-- A resale offer. `status` moves active <-> held -> sold, or to withdrawn.
CREATE TABLE listings (
    id               TEXT    PRIMARY KEY,
    ticket_id        TEXT    NOT NULL REFERENCES tickets (id),
    event_id         TEXT    NOT NULL,
    seller_id        TEXT    NOT NULL REFERENCES users (id),
    price_minor      BIGINT  NOT NULL CHECK (price_minor > 0),
    currency         TEXT    NOT NULL,
    -- the order position's price, and the cap computed from it at listing time
    face_minor       BIGINT  NOT NULL,
    cap_minor        BIGINT,
    -- the ticket generation at listing time; a sale requires it unchanged
    generation       BIGINT  NOT NULL,
    -- active | held | sold | withdrawn
    status           TEXT    NOT NULL,
    -- the purchase holding the listing while its buyer pays
    purchase_id      TEXT,
    held_until       BIGINT,
    -- why it was withdrawn: seller | window_closed | freeze | resale_disabled
    -- | ticket_changed | event_closed
    withdraw_reason  TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
-- at most one open listing per ticket
CREATE UNIQUE INDEX listings_one_open ON listings (ticket_id) WHERE status IN ('active', 'held');
CREATE INDEX listings_event ON listings (event_id, status, price_minor);
CREATE INDEX listings_seller ON listings (seller_id, created_at);
CREATE INDEX listings_held ON listings (status, held_until);

-- A buyer's attempt to buy a listing: held, paid (completed) or not.
CREATE TABLE resale_purchases (
    id               TEXT    PRIMARY KEY,
    listing_id       TEXT    NOT NULL REFERENCES listings (id),
    ticket_id        TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    organization_id  TEXT    NOT NULL,
    buyer_id         TEXT    NOT NULL REFERENCES users (id),
    seller_id        TEXT    NOT NULL REFERENCES users (id),
    -- price = seller_minor + royalty_minor + fee_minor, exactly
    price_minor      BIGINT  NOT NULL,
    seller_minor     BIGINT  NOT NULL,
    royalty_minor    BIGINT  NOT NULL,
    fee_minor        BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    -- pending | completed | expired | refunded | cancelled
    status           TEXT    NOT NULL,
    payment_id       TEXT,
    checkout_url     TEXT,
    last_payment_error TEXT,
    expires_at       BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    completed_at     BIGINT,
    CHECK (price_minor = seller_minor + royalty_minor + fee_minor)
);
CREATE INDEX resale_purchases_due ON resale_purchases (status, expires_at);
CREATE INDEX resale_purchases_buyer ON resale_purchases (buyer_id, created_at);
CREATE INDEX resale_purchases_listing ON resale_purchases (listing_id);

-- What the platform owes a seller for a completed resale; paid out by the
-- finance run (outside Entrada for now).
CREATE TABLE payouts (
    id               TEXT    PRIMARY KEY,
    purchase_id      TEXT    NOT NULL UNIQUE REFERENCES resale_purchases (id),
    seller_id        TEXT    NOT NULL REFERENCES users (id),
    amount_minor     BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    -- due | paid
    status           TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX payouts_seller ON payouts (seller_id, created_at);

-- Every ownership change, for the public history and the per-ticket
-- resale limit.
CREATE TABLE ticket_transfers (
    id               TEXT    PRIMARY KEY,
    ticket_id        TEXT    NOT NULL REFERENCES tickets (id),
    event_id         TEXT    NOT NULL,
    -- gift | resale
    kind             TEXT    NOT NULL,
    from_id          TEXT    NOT NULL,
    to_id            TEXT    NOT NULL,
    -- the generation the ticket moved to
    generation       BIGINT  NOT NULL,
    price_minor      BIGINT,
    cap_minor        BIGINT,
    currency         TEXT,
    at               BIGINT  NOT NULL,
    UNIQUE (ticket_id, generation)
);
CREATE INDEX ticket_transfers_ticket ON ticket_transfers (ticket_id, at);
