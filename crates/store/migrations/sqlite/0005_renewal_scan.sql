-- When the server considers a certificate due for renewal (its renewal window opens), so
-- "who must renew next" is one indexed range scan over issued certificates.
ALTER TABLE certificates ADD COLUMN renew_after INTEGER;
UPDATE certificates SET renew_after = not_after - (not_after - not_before) / 5;
CREATE INDEX certificates_due ON certificates(state, renew_after);
