-- Trust model: who may enroll a template (grants), which names requests may carry, which key
-- types it accepts, whether MDM may pick it; account groups and device patterns; who a device
-- is bound to and which groups it is in; one successor per certificate; first use of a
-- certificate (its predecessor is revoked as superseded then).
ALTER TABLE templates ADD COLUMN grants TEXT NOT NULL DEFAULT 'account:*,token';
UPDATE templates SET grants = 'account:*' WHERE name = 'WebServer';
ALTER TABLE templates ADD COLUMN dns_suffixes TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN ip_ranges TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN allow_wildcards BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN allow_server_names BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN renewal_subset BIGINT NOT NULL DEFAULT 0;
-- Until now every template took EC and RSA keys alike.
ALTER TABLE templates ADD COLUMN key_types TEXT NOT NULL DEFAULT 'ec,rsa';
ALTER TABLE templates ADD COLUMN allow_mdm BIGINT NOT NULL DEFAULT 0;

ALTER TABLE accounts ADD COLUMN groups TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN devices TEXT NOT NULL DEFAULT '*';

-- A device belongs to the requester of its first issued request: an account ('account:NAME');
-- devices an administrator set up (tokens, dynamic challenges, the listener) belong to 'admin';
-- devices a static SCEP challenge created, to 'scep:static' (the client chose their names).
ALTER TABLE devices ADD COLUMN owner TEXT;
UPDATE devices SET owner = (SELECT r.requester FROM requests r
    WHERE r.device_id = devices.id AND r.status = 'issued' ORDER BY r.id LIMIT 1);
UPDATE devices SET owner = 'admin'
    WHERE owner IS NOT NULL AND owner NOT LIKE 'account:%' AND owner <> 'scep:static';

CREATE TABLE device_groups (
    group_name TEXT NOT NULL,
    device_id  BIGINT NOT NULL REFERENCES devices(id),
    PRIMARY KEY (group_name, device_id)
);
CREATE INDEX device_groups_device ON device_groups(device_id);

-- One certificate has one successor: the claim is this primary key.
CREATE TABLE successors (
    previous_serial TEXT PRIMARY KEY,
    serial          TEXT NOT NULL
);
INSERT INTO successors (previous_serial, serial)
    SELECT c.previous_serial, MIN(c.serial) FROM certificates c
    WHERE c.previous_serial IS NOT NULL AND c.created_at = (
        SELECT MIN(c2.created_at) FROM certificates c2 WHERE c2.previous_serial = c.previous_serial)
    GROUP BY c.previous_serial;

ALTER TABLE certificates ADD COLUMN first_used_at BIGINT;

-- Rows older versions accepted and today's validation refuses, made valid where the intent is
-- plain (the rest is reported as misconfigured and can be repaired with `template update`).
UPDATE templates SET retry_interval_secs = renewal_secs WHERE retry_interval_secs > renewal_secs;
UPDATE templates SET min_key_bits = 2048 WHERE min_key_bits < 2048;
UPDATE templates SET key_usage = 'digitalSignature' WHERE key_usage = '';
-- A template without EKUs issued certificates good for any purpose; clientAuth is what the
-- defaults are for (an administrator widens it with `template update --eku`).
UPDATE templates SET ext_key_usage = 'clientAuth' WHERE ext_key_usage = '';
-- Revocation reasons were free text when a device was blocked: keep the RFC 5280 names only.
UPDATE certificates SET revocation_reason = 'unspecified' WHERE revocation_reason IS NOT NULL
    AND revocation_reason NOT IN ('unspecified', 'keyCompromise', 'caCompromise', 'affiliationChanged',
        'superseded', 'cessationOfOperation', 'privilegeWithdrawn');
