-- Whether a template is for users (Windows user-context autoenrollment) or, as every template
-- so far, for computers (XCEP generalFlags CT_FLAG_MACHINE_TYPE).
ALTER TABLE templates ADD COLUMN for_users BIGINT NOT NULL DEFAULT 0;
