ALTER TABLE templates ADD COLUMN retry_interval_secs BIGINT NOT NULL DEFAULT 604800;
CREATE TABLE device_attributes (
    device_id   BIGINT NOT NULL REFERENCES devices(id),
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (device_id, name)
);
