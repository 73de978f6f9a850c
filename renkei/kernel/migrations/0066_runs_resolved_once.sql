-- renkei schema, version 66: the hub resolves a run once, and keeps the ticket it issued.
--
-- A run's ticket (the hub's signed word that it resolved that very run: its version, trigger,
-- caller, purpose and person) was issued each time the run asked `hub.resolve`. A run could ask
-- again about another person and hold genuine tickets for two: the portal showed the flow to
-- the person of the first one the history held, while its linkages could be about the other.
-- The hub now writes the one ticket it issues for a run (`hub.resolve`, or `hub.check-resume`
-- for a continuation) here before it answers; the run asking again gets the same ticket, and a
-- different one is refused. The portal reads a run's person from here.
--
-- Written once per run, never changed nor removed (the hub's role may not either).
CREATE TABLE hub.run_tickets (
    workflow_id text NOT NULL,
    run_id      text NOT NULL,
    ticket      text NOT NULL,        -- the exact text the hub signed (run-ticket/v2)
    signature   text NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, run_id)
);

CREATE TRIGGER issued_once BEFORE UPDATE OR DELETE OR TRUNCATE ON hub.run_tickets
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
REVOKE UPDATE, DELETE, TRUNCATE ON hub.run_tickets FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON hub.run_tickets TO renkei_app;
    END IF;
END $$;
