-- renkei schema, version 62: a hold request names the person it is about.
--
-- A hold keeps a case's records from the citizen's view until a date. It named the case (its
-- BPF and case reference) but not the person: the executor's own worker, which writes the
-- case's start, its calls' starts and its linkage requests, could carry the case's approved
-- hold into records about anyone. A request now names its subject (their code at the
-- executor), which the platform operator approves with it and the hub's signature on the
-- approval covers (renkei.kernel.holds); the hub takes the hold only for that person. A request
-- is added with its subject, which is kept as made; the requests from before name none: those
-- approved before keep covering their case as they did, and those still pending are approved no
-- more (the executor asks again, naming the person).
ALTER TABLE hub.holds ADD COLUMN subject text;

CREATE OR REPLACE FUNCTION hub.holds_as_requested() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.approved_by IS NOT NULL OR NEW.approved_at IS NOT NULL THEN
        RAISE EXCEPTION 'a hold request is added unapproved; a platform operator approves it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.subject IS NULL THEN
        RAISE EXCEPTION 'a hold request names the person it is about'
            USING ERRCODE = 'not_null_violation';
    END IF;
    NEW.requested_at := now();
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION hub.holds_approve_once() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.approved_by IS NOT NULL
       AND (to_jsonb(NEW) - 'approval_signature') = (to_jsonb(OLD) - 'approval_signature')
       AND (OLD.approval_signature IS NULL OR OLD.approved_at < (SELECT applied_at
            FROM public.renkei_migrations WHERE name = '0061_hold_approvals_signed.sql')) THEN
        -- an approval is signed where it has no signature; one from before signing, again
        -- where what it carries is not the hub's (the hub signs it at its start)
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' OR OLD.approved_by IS NOT NULL
       OR NEW.id <> OLD.id OR NEW.executor <> OLD.executor OR NEW.reason <> OLD.reason
       OR NEW.bpf <> OLD.bpf OR NEW.case_ref <> OLD.case_ref
       OR NEW.until <> OLD.until OR NEW.requested_by <> OLD.requested_by
       OR NEW.requested_at <> OLD.requested_at
       OR NEW.subject IS DISTINCT FROM OLD.subject THEN
        RAISE EXCEPTION 'a hold request is kept as made, and approved once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.approved_by IS NOT NULL AND NEW.subject IS NULL THEN
        RAISE EXCEPTION 'a hold request that names no one is approved no more: ask again, naming the person'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.approved_by IS NOT NULL THEN
        -- the database's clock as it reads now (not when a transaction began): an approval is
        -- never dated back
        NEW.approved_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
