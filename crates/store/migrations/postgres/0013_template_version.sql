-- A version number for the templates, bumped by any change to them (from any replica), so
-- that servers may serve templates from memory and re-read them only when it moved.
CREATE TABLE template_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO template_version (id, version) VALUES (1, 0);
CREATE FUNCTION template_version_bump() RETURNS trigger AS $$
BEGIN
    UPDATE template_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER template_version_on_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON templates
    FOR EACH STATEMENT EXECUTE FUNCTION template_version_bump();
