-- Failed secret checks per key (`account:NAME`, `ip:ADDR`): counted in a window, shared by every
-- replica, and a lock once a key has failed too often.
CREATE TABLE auth_failures (
    key          TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT
);
