-- renkei schema, version 60: an individual number's subject is the hub's word.
--
-- hub.individuals names, for each individual number's keyed hash, the hub's subject. The
-- application's role could rewrite it (swap two people's subjects), and the next enrolment by
-- number would then give an executor another person's code: its flows would fetch that person's
-- data. Each row the hub adds now carries a binding, the hub's keyed MAC over the hash and the
-- subject (renkei.kernel.pseudonyms), checked at every enrolment by number; rows are never
-- changed or removed, for any role (a trigger). The rows from before stand as they are
-- (`before_binding`, set by this migration only).
ALTER TABLE hub.individuals
    ADD COLUMN binding text,
    ADD COLUMN before_binding boolean NOT NULL DEFAULT false;
UPDATE hub.individuals SET before_binding = true;

CREATE FUNCTION hub.individual_fixed() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.before_binding := false;  -- only this migration marks a row as from before
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'an individual''s row is never changed or removed'
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER fixed BEFORE INSERT OR UPDATE OR DELETE ON hub.individuals
    FOR EACH ROW EXECUTE FUNCTION hub.individual_fixed();
CREATE TRIGGER never_emptied BEFORE TRUNCATE ON hub.individuals
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON hub.individuals FROM renkei_app;
    END IF;
END $$;
