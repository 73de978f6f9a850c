-- renkei schema, version 35: what an org's own role may append, and what a witness may sign.
--
--  * An org writes only its own side of the attempts it answers (provider = keeper). The
--    requester's record of an attempt is the hub's to write, with the hub's; an org could
--    otherwise set down its own version first (the hub's write then finds the attempt there
--    and leaves it).
--  * A checkpoint names a record that is there: a witness that signs a head the chain never
--    had would make the chain look cut, for good (checkpoints are append-only).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        DROP POLICY IF EXISTS own_chain ON records.access_records;
        CREATE POLICY own_chain ON records.access_records FOR SELECT TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user));
        CREATE POLICY own_answers ON records.access_records FOR INSERT TO renkei_party
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user)
                        AND provider = keeper);
    END IF;
END $$;

-- Reads every chain whoever inserts (an org's role sees only its own chain's records).
CREATE FUNCTION records.checkpoint_names_a_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, records AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM records.access_records
        WHERE keeper = NEW.keeper AND chain_seq = NEW.chain_seq AND record_hash = NEW.record_hash
    ) THEN
        RAISE EXCEPTION 'a checkpoint names a record of the chain (% #%): there is none',
            NEW.keeper, NEW.chain_seq;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION records.checkpoint_names_a_record() FROM PUBLIC;
CREATE TRIGGER names_a_record BEFORE INSERT ON records.checkpoints
    FOR EACH ROW EXECUTE FUNCTION records.checkpoint_names_a_record();
