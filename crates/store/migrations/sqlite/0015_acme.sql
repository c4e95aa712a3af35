-- ACME (RFC 8555). An external account binding key, made by an administrator for an
-- autoenroll account, binds one ACME account key to that account (single use). The MAC key
-- itself is not stored: the CA layer derives it from the key id.
CREATE TABLE acme_eab_keys (
    kid        TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
-- An ACME account: its key (canonical JWK and RFC 7638 thumbprint) and the autoenroll
-- account it acts as (its grants and device patterns).
CREATE TABLE acme_accounts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    thumbprint TEXT NOT NULL UNIQUE,
    jwk        TEXT NOT NULL,
    account    TEXT NOT NULL,
    contact    TEXT NOT NULL,
    eab_kid    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- Set when the client deactivated the account (RFC 8555 section 7.3.6): final.
    deactivated_at INTEGER
);
-- An order with its authorizations, as the RA's JSON; revision makes each change a
-- compare-and-swap (two replicas validating one challenge).
CREATE TABLE acme_orders (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    acme_account_id    INTEGER NOT NULL REFERENCES acme_accounts (id),
    body               TEXT NOT NULL,
    revision           INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    certificate_serial TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX acme_orders_certificate ON acme_orders (certificate_serial);
-- Nonces already used (replay protection across replicas); a nonce's own MAC says it is ours
-- and how old it is, so only used ones are kept, until they would have expired anyway.
CREATE TABLE acme_used_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX acme_used_nonces_expiry ON acme_used_nonces (expires_at);
