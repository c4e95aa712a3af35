-- Device names as DNS compares them (ASCII case, trailing dots): a new device under another
-- spelling of a known one is refused (`device_spelled_otherwise`). Indexed so that the check,
-- run on every first enrollment, does not scan the inventory.
CREATE INDEX devices_canonical_name ON devices (lower(rtrim(name, '.')));
