-- renkei schema, version 29: the conformance kit's runs, kept apart from the real ones.
--
-- The kit's hub (test mode, on the kit's clock) notes every run it resolves or continues here, by
-- workflow and run id; billing leaves out the access records of these runs. Only that hub writes
-- here: a hub in operation never resolves a kit run. The application role may read and append
-- (the default privileges of the records schema), never change or remove a row.
CREATE TABLE records.conformance_runs (
    workflow_id text NOT NULL,
    run_id      text NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, run_id)
);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON records.conformance_runs
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
REVOKE UPDATE, DELETE, TRUNCATE ON records.conformance_runs FROM PUBLIC;
