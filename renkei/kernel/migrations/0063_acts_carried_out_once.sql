-- renkei schema, version 63: a partner carries out an act at most once per attempt.
--
-- A permit is for one answer: a query asked again under it gets only the answer the provider's
-- receipt kept (the gate compares the digests). An act has an effect besides its answer (an
-- enrolment, a payment): the partner's code ran again each time the executor asked again, and
-- only then was its answer compared. The partner's gate now notes that it begins an attempt's
-- act before it runs the partner's code (`records.act_runs`, one row per attempt), and keeps
-- the act's answer there, sealed to the partner itself, once it is carried out:
--
--  * asked again after the act was carried out (a retry after a lost reply, or an executor
--    asking again), the gate answers what it kept, and the act is not carried out again;
--  * asked again while the act is under way, or after a run that ended no one knows how (the
--    worker was killed mid-act), the gate refuses: whether the act took effect is the partner's
--    to find out, never a reason to carry it out twice;
--  * the partner's code failing (it says it did not carry the act out) takes the note back, so
--    the attempt may be retried as before.
--
-- A row is written once, its answer set once; only a row without an answer is removed.
CREATE TABLE records.act_runs (
    keeper      text NOT NULL,         -- the partner that carries out the act
    attempt_key text NOT NULL,
    begun_at    timestamptz NOT NULL DEFAULT now(),
    answer      jsonb,                 -- the act's answer, sealed to the keeper (for the attempt)
    PRIMARY KEY (keeper, attempt_key)
);

CREATE FUNCTION records.act_run_once() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.answer IS NOT NULL THEN
        RAISE EXCEPTION 'an act carried out stays as it was kept'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NEW.keeper <> OLD.keeper OR NEW.attempt_key <> OLD.attempt_key
            OR NEW.begun_at <> OLD.begun_at THEN
        RAISE EXCEPTION 'an act run names its attempt once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER carried_out_once BEFORE UPDATE OR DELETE ON records.act_runs
    FOR EACH ROW EXECUTE FUNCTION records.act_run_once();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON records.act_runs
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON records.act_runs TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON records.act_runs TO renkei_party;
        ALTER TABLE records.act_runs ENABLE ROW LEVEL SECURITY;
        -- An org notes and reads only its own acts; the platform's role (one process serving
        -- every org, as in a dev stack) all of them.
        CREATE POLICY own_acts ON records.act_runs FOR ALL TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user));
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
            CREATE POLICY platform_acts ON records.act_runs FOR ALL TO renkei_app
                USING (true) WITH CHECK (true);
        END IF;
    END IF;
END $$;
