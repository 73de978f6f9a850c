-- renkei schema, version 60: an individual number's subject is the hub's word.
--
-- hub.individuals names, for each individual number's keyed hash, the hub's subject. The
-- application's role could rewrite it (swap two people's subjects), and the next enrolment by
-- number would then give an executor another person's code: its flows would fetch that person's
-- data. Each row now carries a binding, the hub's keyed MAC over the hash and the subject
-- (renkei.kernel.pseudonyms), checked at every enrolment by number: a row without one that
-- holds enrols no one. No row's number or subject is ever changed, nor any row removed, by any
-- role (a trigger); the one change a row takes is its binding, where it had none (and, for a
-- row from before, where what it carries is not the hub's). The rows from before are bound by
-- the hub at each start (workers.carried): only those enrolled before this migration (a row's
-- enrolment time is the database's clock, a trigger).
ALTER TABLE hub.individuals ADD COLUMN binding text;

CREATE FUNCTION hub.individual_fixed() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- the database's clock, as it reads when the row is written (not when a transaction
        -- began): a row is never dated back
        NEW.enrolled_at := clock_timestamp();
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.number_hash = OLD.number_hash
       AND NEW.subject_id = OLD.subject_id AND NEW.enrolled_at = OLD.enrolled_at
       AND (OLD.binding IS NULL OR OLD.enrolled_at < (SELECT applied_at
            FROM public.renkei_migrations WHERE name = '0060_individuals_bound.sql')) THEN
        -- a row is bound where it has no binding; one from before bindings, again where what
        -- it carries is not the hub's (the hub binds it at its start)
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
        GRANT UPDATE (binding) ON hub.individuals TO renkei_app;
    END IF;
END $$;
