-- renkei schema, version 59: the PIA registry and the emergency stop count only what the hub signed.
--
-- controls.pia_events and controls.suspension_events are appended by the application's role:
-- any process with that role could append an active PIA the commission never approved, or lift
-- a suspension the operator put in force, and every gate would then let the linkage through.
-- Each event the platform appends now carries the hub's Ed25519 signature over its table, its
-- number and its content (whitelist.controls_store); a reader takes, for each PIA or target, its
-- newest event whose signature holds, and an event appended any other way decides nothing.
-- The state the events from before this migration left is signed again by the hub at its next
-- start (whitelist.controls_store.carry_over), once: controls.signed_from records, for each
-- table, the first number past them (no role but the owner writes it), so nothing appended
-- since is ever carried.
ALTER TABLE controls.pia_events ADD COLUMN signing_id text, ADD COLUMN signature text;
ALTER TABLE controls.suspension_events ADD COLUMN signing_id text, ADD COLUMN signature text;

CREATE TABLE controls.signed_from (
    events text PRIMARY KEY CHECK (events IN ('pia', 'suspension')),
    seq    bigint NOT NULL
);
-- The first number that must be signed is past every number used or handed out so far, and the
-- sequences go on from it: no event to come is ever numbered below it.
DO $$
DECLARE
    events text;
    boundary bigint;
BEGIN
    FOREACH events IN ARRAY ARRAY['pia', 'suspension'] LOOP
        EXECUTE format('SELECT greatest(coalesce(max(seq), 0), (SELECT last_value FROM'
                       ' controls.%1$s_events_seq_seq)) + 1 FROM controls.%1$s_events', events)
            INTO boundary;
        INSERT INTO controls.signed_from (events, seq) VALUES (events, boundary);
        PERFORM setval(format('controls.%s_events_seq_seq', events), boundary, false);
        EXECUTE format('ALTER TABLE controls.%s_events ADD CONSTRAINT signed_numbers'
                       ' CHECK (seq >= %s) NOT VALID', events, boundary);
    END LOOP;
END $$;
CREATE TRIGGER fixed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON controls.signed_from
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

-- An event has the number its sequence gave this session: none is appended with a number chosen
-- ahead (the hub's next event would then fail on it).
CREATE FUNCTION controls.event_numbered() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    given bigint;
BEGIN
    BEGIN
        given := pg_catalog.currval(TG_ARGV[0]::pg_catalog.regclass);
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        given := NULL;  -- the sequence gave this session no number yet
    END;
    IF NEW.seq IS DISTINCT FROM given THEN
        RAISE EXCEPTION 'an event takes the number the sequence gave it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER numbered BEFORE INSERT ON controls.pia_events
    FOR EACH ROW EXECUTE FUNCTION controls.event_numbered('controls.pia_events_seq_seq');
CREATE TRIGGER numbered BEFORE INSERT ON controls.suspension_events
    FOR EACH ROW EXECUTE FUNCTION controls.event_numbered('controls.suspension_events_seq_seq');

-- Every trigger function of renkei's schemas resolves names in the system catalog only: a
-- session's search_path (a function of the same name in a schema it may create in, put
-- first) does not change what a trigger checks or stamps.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('records', 'hub', 'registry', 'whitelist', 'controls', 'trust',
                             'billing', 'codec')
           AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
           AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c
                            WHERE c LIKE 'search_path=%')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END $$;

-- Each target's latest row is no longer what is in force (the latest that holds is): the views
-- that said so go, so nothing reads them by mistake.
DROP VIEW controls.pias;
DROP VIEW controls.suspensions;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT ON controls.signed_from TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON controls.signed_from TO renkei_party;
    END IF;
END $$;
