ALTER TABLE certificates ADD COLUMN previous_serial TEXT;
ALTER TABLE certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;
CREATE INDEX certificates_previous ON certificates(previous_serial);
ALTER TABLE requests ADD COLUMN previous_serial TEXT;
ALTER TABLE templates ADD COLUMN renewal_grace_secs BIGINT NOT NULL DEFAULT 0;
