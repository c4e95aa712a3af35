-- A version number for the templates, bumped by any change to them (from any replica), so
-- that servers may serve templates from memory and re-read them only when it moved.
CREATE TABLE template_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO template_version (id, version) VALUES (1, 0);
CREATE TRIGGER template_version_on_insert AFTER INSERT ON templates
BEGIN
    UPDATE template_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER template_version_on_update AFTER UPDATE ON templates
BEGIN
    UPDATE template_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER template_version_on_delete AFTER DELETE ON templates
BEGIN
    UPDATE template_version SET version = version + 1 WHERE id = 1;
END;
