-- renkei schema, version 65: an act's note names the run that wrote it, and the database
-- itself keeps an act cut off from being answered or taken back afterwards.
--
-- * A gate asks the database again when a reply is lost. A note written by a try whose reply
--   was lost read as someone else's ("under way", then refused for good, though nothing was
--   carried out); a removal retried after its reply was lost could remove another run's note
--   written meanwhile, and that act would then be carried out twice. Each run of an act writes
--   its own token with its note, and keeps, removes or refuses only the note with that token.
-- * Past the moment an act is cut off and its margin (two seconds, as the gate's MARGIN), an
--   ask again is refused: from then on no answer of the act is kept and its note is not taken
--   back, whatever release of the gate writes (a gate of this release also writes its refusal
--   to the note first; one from before does not).
ALTER TABLE records.act_runs ADD COLUMN run_token uuid;

CREATE OR REPLACE FUNCTION records.act_run_once() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.answer IS NOT NULL THEN
        RAISE EXCEPTION 'an act carried out stays as it was kept'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.deadline IS NOT NULL AND now() >= OLD.deadline + interval '2 seconds'
            AND (TG_OP = 'DELETE' OR NEW.answer IS DISTINCT FROM '{"cut_off": true}'::jsonb) THEN
        RAISE EXCEPTION 'an act cut off keeps no answer and its note'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NEW.keeper <> OLD.keeper OR NEW.attempt_key <> OLD.attempt_key
            OR NEW.begun_at <> OLD.begun_at
            OR NEW.deadline IS DISTINCT FROM OLD.deadline
            OR NEW.run_token IS DISTINCT FROM OLD.run_token THEN
        RAISE EXCEPTION 'an act run names its attempt once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
