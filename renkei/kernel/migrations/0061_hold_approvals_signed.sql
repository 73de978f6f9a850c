-- renkei schema, version 61: a hold's approval is the hub's signature, not a column's value.
--
-- A hold keeps a case's records from the citizen's view until a date; it needs an executor's
-- request and a platform operator's approval. The approval was the row's approved_by, which
-- the application's role can set (it is the role operators approve through). Each approval
-- the platform records now carries the hub's signature over the request and who approved it
-- when (renkei.kernel.holds); the hub takes a hold only with it. An approval is dated by the
-- database's clock. The approvals from before are signed by the hub at each start
-- (workers.carried): only those made before this migration.
ALTER TABLE hub.holds ADD COLUMN approval_signature text;

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
       OR NEW.requested_at <> OLD.requested_at THEN
        RAISE EXCEPTION 'a hold request is kept as made, and approved once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.approved_by IS NOT NULL THEN
        -- the database's clock as it reads now (not when a transaction began): an approval is
        -- never dated back
        NEW.approved_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
