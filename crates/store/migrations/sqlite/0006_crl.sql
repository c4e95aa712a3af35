-- CRLs: numbers come from one counter row (replicas never reuse a number); the newest CRL is
-- kept, and an older one never overwrites it.
CREATE TABLE crl_numbers (
    issuer TEXT PRIMARY KEY,
    last   INTEGER NOT NULL
);
CREATE TABLE crls (
    issuer      TEXT PRIMARY KEY,
    number      INTEGER NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    der         BLOB NOT NULL
);
CREATE INDEX certificates_revoked ON certificates(state, revoked_at);
