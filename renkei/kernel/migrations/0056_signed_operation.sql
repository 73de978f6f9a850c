-- renkei schema, version 56: an executor's `operate` is its own signature; a retired version
-- stays retired.
--
-- A row of registry.operated_by makes the platform start a version's flows for that executor
-- (its schedules, its scans, its starts in operation). Anyone who can add a row (the
-- application's role) could put a version into operation for an executor that never chose to.
-- Each row now carries the executor's signature over the version, its content hash and its own
-- name, with the id of the key that made it; a hub in operation runs a version for an executor
-- only on such a signature (activities.approved). The rows from before are marked
-- `before_signing`, which the application cannot set: only they, and only for content the
-- operator lists in RENKEI_ACCEPT_UNSIGNED_APPROVALS, run without a signature.
ALTER TABLE registry.operated_by
    ADD COLUMN signing_id text,
    ADD COLUMN signature text,
    ADD COLUMN before_signing boolean NOT NULL DEFAULT false;
UPDATE registry.operated_by SET before_signing = true;

-- An executor's `operate` again signs its own row when the row's signature is not the one it
-- makes now (none, someone else's, a key since replaced): the application adds rows with every
-- column but `before_signing`, and may rewrite a row's two signature columns, nothing else (its
-- executor, its version, when it began stay as appended).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE INSERT ON registry.operated_by FROM renkei_app;
        GRANT INSERT (bpf, version, executor, since, signing_id, signature)
            ON registry.operated_by TO renkei_app;
        GRANT UPDATE (signing_id, signature) ON registry.operated_by TO renkei_app;
    END IF;
END $$;

-- The same by trigger, for every role (a database without the application's role, as a managed
-- one may be, relies on it): a row is added as not from before signing, and only its signature
-- columns ever change.
CREATE FUNCTION registry.operated_by_as_signed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.before_signing := false;
        RETURN NEW;
    END IF;
    IF (NEW.bpf, NEW.version, NEW.executor, NEW.since, NEW.before_signing)
       IS DISTINCT FROM (OLD.bpf, OLD.version, OLD.executor, OLD.since, OLD.before_signing) THEN
        RAISE EXCEPTION 'an executor''s operation of % v% changes only by its signature',
            OLD.bpf, OLD.version
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER as_signed BEFORE INSERT OR UPDATE ON registry.operated_by
    FOR EACH ROW EXECUTE FUNCTION registry.operated_by_as_signed();

-- Retired is for good: a version's state never leaves `retired`, whichever role writes it (the
-- executors' signed `operate` and the approval from before the retirement would otherwise
-- still hold for it). A new version is registered instead.
CREATE FUNCTION registry.refuse_unretire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'retired' AND NEW.state IS DISTINCT FROM 'retired' THEN
        RAISE EXCEPTION 'a retired BPF version stays retired (% v%): register a new version',
            OLD.bpf, OLD.version
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER stays_retired BEFORE UPDATE OF state ON registry.bpf_versions
    FOR EACH ROW EXECUTE FUNCTION registry.refuse_unretire();
