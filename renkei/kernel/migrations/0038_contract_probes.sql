-- renkei schema, version 38: contract probes, kept apart from the real exchanges.
--
-- `renkei contract ORG` reaches the org's own worker through its whitelist gate with a probe
-- permit (renkei.contracts.probe). The gate records each probe here, by its org, never in its
-- chain of access records: billing, usage, the outboxes and the citizens' pages read those
-- only, so nothing of a probe is billed, counted or shown. A probe names no one: its subject is
-- a probe code or none, and `reason` says why a probe was refused. Append-only like the records;
-- an org's role appends and reads its own probes only, the application's role every org's.
CREATE TABLE records.contract_probes (
    org         text NOT NULL,
    workflow_id text NOT NULL,
    run_id      text NOT NULL,
    step        text NOT NULL,
    info        text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    reason      text NOT NULL,
    decided_at  timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, run_id, step)
);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON records.contract_probes
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
REVOKE UPDATE, DELETE, TRUNCATE ON records.contract_probes FROM PUBLIC;
ALTER TABLE records.contract_probes ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        CREATE POLICY application ON records.contract_probes TO renkei_app
            USING (true) WITH CHECK (true);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT, INSERT ON records.contract_probes TO renkei_party;
        CREATE POLICY own_probes ON records.contract_probes TO renkei_party
            USING (org = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (org = (SELECT party FROM trust.db_roles WHERE role = current_user));
    END IF;
END $$;
