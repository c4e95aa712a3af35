-- "Why is it stuck": the latest refusal about a certificate or device.
CREATE INDEX audit_events_subject ON audit_events(subject, at);
