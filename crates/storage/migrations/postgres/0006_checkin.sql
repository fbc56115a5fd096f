-- Check-in: issuing keys, zones, gates, entry policies, scanner devices,
-- access staff, holder device keys, scans, admissions and conflicts.
--
-- One entry per ticket (invariant 4): `admissions` holds one row per ticket,
-- created by INSERT … ON CONFLICT DO NOTHING and advanced only by a
-- conditional UPDATE (`WHERE entries < max AND inside = FALSE`) in the same
-- transaction that records the scan; the scanner hears "ok" only after that
-- transaction commits.

-- Per-event Ed25519 issuing keys. `slot` is 'current' for the key that signs
-- and NULL for older keys, which keep verifying until `retired_at`. The
-- UNIQUE (event_id, slot) lets concurrent processes race to create the first
-- key and all use the winner's. The private key is stored as raw bytes
-- (base64url) for now; envelope encryption arrives with the wallet's key
-- management.
CREATE TABLE event_issuing_keys (
    kid          TEXT    PRIMARY KEY, -- base64url of the 8-byte key id
    event_id     TEXT    NOT NULL REFERENCES events (id),
    slot         TEXT,
    private_key  TEXT    NOT NULL, -- raw 32-byte seed, base64url
    public_key   TEXT    NOT NULL, -- raw 32 bytes, base64url
    created_at   BIGINT  NOT NULL,
    retired_at   BIGINT,
    UNIQUE (event_id, slot)
);
CREATE INDEX event_issuing_keys_event ON event_issuing_keys (event_id);

-- Per-event check-in settings; doors close at `ends_at` unless set here.
CREATE TABLE checkin_settings (
    event_id        TEXT    PRIMARY KEY REFERENCES events (id),
    doors_close_at  BIGINT,
    updated_at      BIGINT  NOT NULL
);

CREATE TABLE zones (
    id          TEXT    PRIMARY KEY,
    event_id    TEXT    NOT NULL REFERENCES events (id),
    name        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    UNIQUE (event_id, name)
);

CREATE TABLE gates (
    id          TEXT    PRIMARY KEY,
    event_id    TEXT    NOT NULL REFERENCES events (id),
    zone_id     TEXT    NOT NULL REFERENCES zones (id),
    name        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    UNIQUE (event_id, name)
);

-- Entry policy per ticket type; a type without a row is single entry.
CREATE TABLE entry_policies (
    ticket_type_id  TEXT    PRIMARY KEY REFERENCES ticket_types (id),
    reentry         BOOLEAN NOT NULL,
    max_entries     BIGINT  NOT NULL CHECK (max_entries >= 1),
    updated_at      BIGINT  NOT NULL
);

-- Users who may enrol scanner devices and watch attendance for one event.
CREATE TABLE event_staff (
    event_id    TEXT    NOT NULL REFERENCES events (id),
    user_id     TEXT    NOT NULL REFERENCES users (id),
    added_by    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX event_staff_user ON event_staff (user_id);

-- Scanner devices. The enrolment code and the device token are stored as
-- SHA-256 digests only; the code is single use and expires.
CREATE TABLE scanner_devices (
    id                 TEXT    PRIMARY KEY,
    event_id           TEXT    NOT NULL REFERENCES events (id),
    name               TEXT    NOT NULL,
    enrol_digest       TEXT    UNIQUE,
    enrol_expires_at   BIGINT  NOT NULL,
    token_digest       TEXT    UNIQUE,
    public_key         TEXT,
    enrolled_at        BIGINT,
    revoked_at         BIGINT,
    created_by         TEXT    NOT NULL,
    created_at         BIGINT  NOT NULL
);
CREATE INDEX scanner_devices_event ON scanner_devices (event_id);

CREATE TABLE device_gates (
    device_id  TEXT  NOT NULL REFERENCES scanner_devices (id),
    gate_id    TEXT  NOT NULL REFERENCES gates (id),
    PRIMARY KEY (device_id, gate_id)
);

-- The holder device's public key per ticket, valid for one generation only:
-- a new holder registers their own.
CREATE TABLE holder_keys (
    ticket_id      TEXT    PRIMARY KEY REFERENCES tickets (id),
    generation     BIGINT  NOT NULL,
    public_key     TEXT    NOT NULL, -- raw 32 bytes, base64url
    registered_at  BIGINT  NOT NULL
);

-- The revocation view scanners sync: per ticket, the lowest generation that
-- still admits, or cancelled. `revocation_log` is its change feed; its id is
-- the bundle cursor.
CREATE TABLE revocations (
    ticket_id       TEXT    PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    min_generation  BIGINT  NOT NULL,
    cancelled       BOOLEAN NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX revocations_event ON revocations (event_id);

CREATE TABLE revocation_log (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    ticket_id       TEXT    NOT NULL,
    min_generation  BIGINT  NOT NULL,
    cancelled       BOOLEAN NOT NULL,
    at              BIGINT  NOT NULL
);
CREATE INDEX revocation_log_event ON revocation_log (event_id, id);

-- Every scan the server decided or a device uploaded, with the verdict as
-- answered, so a re-upload of the same (device, nonce) replays it.
CREATE TABLE scans (
    id           BIGSERIAL PRIMARY KEY,
    device_id    TEXT    NOT NULL,
    nonce        TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    gate_id      TEXT    NOT NULL,
    zone_id      TEXT,
    ticket_id    TEXT,
    direction    TEXT    NOT NULL,
    ok           BOOLEAN NOT NULL,
    reason       TEXT    NOT NULL,
    offline      BOOLEAN NOT NULL,
    scanned_at   BIGINT  NOT NULL,
    recorded_at  BIGINT  NOT NULL,
    verdict      TEXT    NOT NULL,
    UNIQUE (device_id, nonce)
);
CREATE INDEX scans_event_time ON scans (event_id, scanned_at);

-- One row per ticket that ever entered: the first-scan-wins guard.
CREATE TABLE admissions (
    ticket_id       TEXT    PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    entries         BIGINT  NOT NULL,
    inside          BOOLEAN NOT NULL,
    first_used_at   BIGINT  NOT NULL,
    first_gate_id   TEXT    NOT NULL,
    last_at         BIGINT  NOT NULL,
    last_gate_id    TEXT    NOT NULL
);
CREATE INDEX admissions_event ON admissions (event_id);

-- Offline admissions that collided with an earlier admission: recorded,
-- never dropped, for the organizer to review.
CREATE TABLE checkin_conflicts (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    ticket_id    TEXT    NOT NULL,
    scan_id      BIGINT  NOT NULL,
    device_id    TEXT    NOT NULL,
    gate_id      TEXT    NOT NULL,
    scanned_at   BIGINT  NOT NULL,
    first_used_at BIGINT NOT NULL,
    first_gate_id TEXT   NOT NULL,
    detected_at  BIGINT  NOT NULL
);
CREATE INDEX checkin_conflicts_event ON checkin_conflicts (event_id, id);
