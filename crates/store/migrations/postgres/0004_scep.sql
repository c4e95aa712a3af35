-- SCEP: one-time challenges bound to a device, a template and the expected request, and the
-- transactions that let a client poll (CertPoll) or retry a request it already sent.
CREATE TABLE challenges (
    id               TEXT PRIMARY KEY,
    secret_hash      BYTEA NOT NULL,
    device           TEXT NOT NULL,
    template         TEXT NOT NULL,
    subject          TEXT NOT NULL,
    dns_names        TEXT NOT NULL,
    ip_addrs         TEXT NOT NULL,
    min_key_bits     BIGINT NOT NULL,
    ext_key_usage    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    used_at          BIGINT,
    used_transaction TEXT,
    used_key         TEXT
);
CREATE TABLE scep_transactions (
    transaction_id TEXT NOT NULL,
    signer_key     TEXT NOT NULL,
    request_id     BIGINT NOT NULL REFERENCES requests(id),
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (transaction_id, signer_key)
);
