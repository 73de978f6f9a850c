-- renkei schema, version 21: the emergency stop.
--
-- A platform operator suspends at once an org (as requester, as provider, or both), a BPF
-- version or a whitelist row, with a reason; lifting it is another event with its own reason.
-- Events are only appended (who, when, why); what is suspended now is each target's latest
-- event when that is a suspension (controls.suspensions). A write bumps controls.version and
-- notifies `renkei_controls`, as the PIA registry's do (migration 0020).
CREATE TABLE controls.suspension_events (
    seq      bigserial PRIMARY KEY,
    kind     text NOT NULL CHECK (kind IN ('org', 'bpf', 'row')),
    target   text NOT NULL,            -- an org id, a BPF id or a whitelist row id
    version  integer,                  -- the BPF's version (kind bpf only)
    side     text CHECK (side IN ('requester', 'provider', 'both')),  -- kind org only
    action   text NOT NULL CHECK (action IN ('suspend', 'lift')),
    reason   text NOT NULL CHECK (reason <> ''),
    operator text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'bpf') = (version IS NOT NULL)),
    CHECK (side IS NULL OR kind = 'org'),
    CHECK (kind <> 'org' OR action <> 'suspend' OR side IS NOT NULL)
);
CREATE INDEX suspension_events_latest ON controls.suspension_events (kind, target, version, seq DESC);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON controls.suspension_events
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

-- What is suspended now: each target's latest event, when it is a suspension.
CREATE VIEW controls.suspensions AS
    SELECT * FROM (
        SELECT DISTINCT ON (kind, target, version) *
          FROM controls.suspension_events ORDER BY kind, target, version, seq DESC
    ) latest WHERE action = 'suspend';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT ON controls.suspensions TO renkei_app;
        GRANT SELECT, INSERT ON controls.suspension_events TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE controls.suspension_events_seq_seq TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON controls.suspension_events, controls.suspensions TO renkei_party;
    END IF;
END $$;
