-- MDM: the RetryInterval handed to Windows devices, and what devices report about themselves.
ALTER TABLE templates ADD COLUMN retry_interval_secs INTEGER NOT NULL DEFAULT 604800;
CREATE TABLE device_attributes (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, name)
);
