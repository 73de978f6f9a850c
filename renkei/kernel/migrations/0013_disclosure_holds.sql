-- renkei schema, version 13: disclosure holds need a second party's approval.
--
-- The executor requests a hold for one case (a BPF and its case reference), with a reason from a
-- fixed list and an end date within that reason's longest duration; a platform operator approves
-- it. A flow's hold names the approved request,
-- and the hub refuses a start whose hold was not approved. Requests are never deleted; an
-- approval is set once.
CREATE TABLE hub.holds (
    id           uuid PRIMARY KEY,
    executor     text NOT NULL,
    bpf          text NOT NULL,
    case_ref     text NOT NULL,  -- the one case (flow) the hold covers: bpf/executor/case_ref
    reason       text NOT NULL,
    until        timestamptz NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    approved_by  text,
    approved_at  timestamptz,
    CHECK ((approved_by IS NULL) = (approved_at IS NULL)),
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
);

CREATE FUNCTION hub.holds_approve_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.approved_by IS NOT NULL
       OR NEW.id <> OLD.id OR NEW.executor <> OLD.executor OR NEW.reason <> OLD.reason
       OR NEW.bpf <> OLD.bpf OR NEW.case_ref <> OLD.case_ref
       OR NEW.until <> OLD.until OR NEW.requested_by <> OLD.requested_by
       OR NEW.requested_at <> OLD.requested_at THEN
        RAISE EXCEPTION 'a hold request is kept as made, and approved once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER approve_once BEFORE UPDATE OR DELETE ON hub.holds
    FOR EACH ROW EXECUTE FUNCTION hub.holds_approve_once();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT, UPDATE ON hub.holds TO renkei_app;
    END IF;
END $$;
