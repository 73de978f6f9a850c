-- renkei schema, version 59: the PIA registry and the emergency stop count only what the hub signed.
--
-- controls.pia_events and controls.suspension_events are appended by the application's role:
-- any process with that role could append an active PIA the commission never approved, or lift
-- a suspension the operator put in force, and every gate would then let the linkage through.
-- Each event the platform appends now carries the hub's Ed25519 signature over its table, its
-- number and its content (whitelist.controls_store); a reader takes, for each PIA or target, its
-- newest event whose signature holds, and an event appended any other way decides nothing.
-- The events from before this migration stand as they are: controls.signed_from records, for
-- each table, the first number that must be signed (no role but the owner writes it).
ALTER TABLE controls.pia_events ADD COLUMN signing_id text, ADD COLUMN signature text;
ALTER TABLE controls.suspension_events ADD COLUMN signing_id text, ADD COLUMN signature text;

CREATE TABLE controls.signed_from (
    events text PRIMARY KEY CHECK (events IN ('pia', 'suspension')),
    seq    bigint NOT NULL
);
INSERT INTO controls.signed_from (events, seq)
    SELECT 'pia', coalesce(max(seq), 0) + 1 FROM controls.pia_events
    UNION ALL
    SELECT 'suspension', coalesce(max(seq), 0) + 1 FROM controls.suspension_events;
CREATE TRIGGER fixed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON controls.signed_from
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

-- An event has the number its sequence gave this session: none is appended with a number chosen
-- ahead (the hub's next event would then fail on it).
CREATE FUNCTION controls.event_numbered() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    given bigint;
BEGIN
    BEGIN
        given := currval(TG_ARGV[0]::regclass);
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
