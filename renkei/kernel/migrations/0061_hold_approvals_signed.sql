-- renkei schema, version 61: a hold's approval is the hub's signature, not a column's value.
--
-- A hold keeps a case's records from the citizen's view until a date; it needs an executor's
-- request and a platform operator's approval. The approval was the row's approved_by, which
-- the application's role can set (it is the role operators approve through). Each approval
-- the platform records now carries the hub's signature over the request and who approved it
-- when (renkei.kernel.holds); the hub takes a hold only with it. Approvals from before stand
-- (`approved_before_signing`, set by this migration only).
ALTER TABLE hub.holds
    ADD COLUMN approval_signature text,
    ADD COLUMN approved_before_signing boolean NOT NULL DEFAULT false;
ALTER TABLE hub.holds DISABLE TRIGGER approve_once;
UPDATE hub.holds SET approved_before_signing = true WHERE approved_by IS NOT NULL;
ALTER TABLE hub.holds ENABLE TRIGGER approve_once;

CREATE FUNCTION hub.holds_signing_kept() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.approved_before_signing := false;
        NEW.approval_signature := NULL;
    ELSE
        NEW.approved_before_signing := OLD.approved_before_signing;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER signing_kept BEFORE INSERT OR UPDATE ON hub.holds
    FOR EACH ROW EXECUTE FUNCTION hub.holds_signing_kept();
