-- renkei schema, version 64: an act's note keeps the moment its run is cut off.
--
-- A begun act is run for at most the time of the attempt that began it, and an ask again is
-- told "under way" (asked again later) until that moment, "begun and never ended" (refused)
-- after it. Both used to be judged by the time of the attempt *asking*, which the requester
-- names: asking again with a shorter time had the act refused while it still ran, and it then
-- completed after the refusal. The note now keeps its deadline, written once with it.
ALTER TABLE records.act_runs ADD COLUMN deadline timestamptz;

CREATE OR REPLACE FUNCTION records.act_run_once() RETURNS trigger LANGUAGE plpgsql
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
            OR NEW.begun_at <> OLD.begun_at
            OR NEW.deadline IS DISTINCT FROM OLD.deadline THEN
        RAISE EXCEPTION 'an act run names its attempt once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
