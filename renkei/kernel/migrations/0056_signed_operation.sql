-- renkei schema, version 56: an executor's `operate` is its own signature.
--
-- A row of registry.operated_by makes the platform start a version's flows for that executor
-- (its schedules, its scans, its starts in operation). Anyone who can add a row (the
-- application's role) could put a version into operation for an executor that never chose to.
-- Each row now carries the executor's signature over the version, its content hash and its own
-- name, with the id of the key that made it; a hub in operation runs a version for an executor
-- only on such a signature (activities.approved). Rows from before stay unsigned: their
-- versions run only if the operator lists their content in RENKEI_ACCEPT_UNSIGNED_APPROVALS.
ALTER TABLE registry.operated_by ADD COLUMN signing_id text, ADD COLUMN signature text;

-- An executor's `operate` again signs its own row when the row's signature is not the one it
-- makes now (none, someone else's, a key since replaced): the application may rewrite those two
-- columns, nothing else of a row (its executor, its version, when it began stay as appended).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT UPDATE (signing_id, signature) ON registry.operated_by TO renkei_app;
    END IF;
END $$;
