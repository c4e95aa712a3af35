-- Timestamps are whole seconds since the Unix epoch (INTEGER); booleans are INTEGER 0/1.
-- Keep column types to those sqlx's Any driver maps on both SQLite and PostgreSQL.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE cas (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    cert_der    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE templates (
    name              TEXT PRIMARY KEY,
    oid               TEXT NOT NULL UNIQUE,
    major             INTEGER NOT NULL,
    minor             INTEGER NOT NULL,
    description       TEXT NOT NULL,
    validity_secs     INTEGER NOT NULL,
    renewal_secs      INTEGER NOT NULL,
    key_algorithm     TEXT NOT NULL,
    min_key_bits      INTEGER NOT NULL,
    key_usage         TEXT NOT NULL,
    ext_key_usage     TEXT NOT NULL,
    subject_from      TEXT NOT NULL,
    allow_san         INTEGER NOT NULL,
    enroll            INTEGER NOT NULL,
    autoenroll        INTEGER NOT NULL,
    pend_all          INTEGER NOT NULL,
    same_key_renewal  INTEGER NOT NULL,
    superseded        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE accounts (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    templates      TEXT NOT NULL,
    disabled       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE bootstrap_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    device      TEXT NOT NULL,
    template    TEXT,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    blocked     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);

CREATE TABLE requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    requester   TEXT NOT NULL,
    template    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    csr_der     BLOB NOT NULL,
    serial      TEXT,
    detail      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX requests_status ON requests(status);

CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY,
    request_id      INTEGER NOT NULL REFERENCES requests(id),
    device_id       INTEGER NOT NULL REFERENCES devices(id),
    template        TEXT NOT NULL,
    template_major  INTEGER NOT NULL,
    template_minor  INTEGER NOT NULL,
    subject         TEXT NOT NULL,
    thumbprint      TEXT,
    not_before      INTEGER NOT NULL,
    not_after       INTEGER NOT NULL,
    state           TEXT NOT NULL,
    der             BLOB,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX certificates_thumbprint ON certificates(thumbprint);
CREATE INDEX certificates_not_after ON certificates(not_after);
CREATE INDEX certificates_device ON certificates(device_id);

CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events(at);
