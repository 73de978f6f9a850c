-- renkei schema, version 57: a hold request is added as a request, when it is made.
--
-- The approval of a hold is set once, by an update (migration 13's trigger); a row could still
-- be added already approved, or dated back, by whoever adds rows (the application's role).
-- A request is now added unapproved and dated by the database's clock, whatever the row says;
-- the hub also takes a hold only within its reason's longest duration from that date
-- (renkei.kernel.holds.check).
CREATE FUNCTION hub.holds_as_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.approved_by IS NOT NULL OR NEW.approved_at IS NOT NULL THEN
        RAISE EXCEPTION 'a hold request is added unapproved; a platform operator approves it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.requested_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER as_requested BEFORE INSERT ON hub.holds
    FOR EACH ROW EXECUTE FUNCTION hub.holds_as_requested();
