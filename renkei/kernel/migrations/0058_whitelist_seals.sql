-- renkei schema, version 58: the whitelist is read only as the hub sealed it.
--
-- The whitelist's rows, sources and periods are written by the application's role: any process
-- with that role could add a row the law does not have, widen a row's scope or keep a
-- superseded source in force, and the hub and every provider's gate would decide with it. Each
-- change the platform makes now appends, in its transaction, the hub's signature over the
-- digest of the whole content after it and over the seal's own number (whitelist.seal); a
-- process deciding linkages reads the content with the newest seal that holds and takes it only
-- if the digests agree. Seals are appended, never changed or removed, whichever role asks.
-- The content an install upgraded from before seals holds is sealed as it is at its next start
-- (whitelist.store.seal_if_unsealed), once.
CREATE TABLE whitelist.seals (
    id         bigserial PRIMARY KEY,
    digest     text NOT NULL,
    signing_id text NOT NULL,
    signature  text NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON whitelist.seals
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
-- A seal has the number its sequence gave this session: none is added with a number chosen
-- ahead (past the hub's next seals, or near the end of the range).
CREATE FUNCTION whitelist.seal_numbered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM currval('whitelist.seals_id_seq') THEN
        RAISE EXCEPTION 'a seal takes the number the sequence gave it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER numbered BEFORE INSERT ON whitelist.seals
    FOR EACH ROW EXECUTE FUNCTION whitelist.seal_numbered();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON whitelist.seals FROM renkei_app;
        GRANT SELECT, INSERT ON whitelist.seals TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE whitelist.seals_id_seq TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON whitelist.seals TO renkei_party;
    END IF;
END $$;
