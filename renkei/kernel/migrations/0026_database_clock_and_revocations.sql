-- renkei schema, version 26: the database's clock, and revocations as the hub's signed word.
--
--  * Each record, outcome and witness signature gets the moment the database stored it
--    (`stored_at`), set by a trigger from the database's own clock: no writer can choose it. A
--    signature counts by that moment, so the holder of a revoked key cannot date what it signs
--    after the revocation into the time before it. Rows stored before this version keep NULL
--    (their own time stands).
--  * A key's revocation is a statement the hub signs (party, key, from when, why), in an
--    append-only table. `trust.parties.revoked_at` only says which key is current: once set it
--    can be neither cleared nor moved, and verification reads the statements.
ALTER TABLE records.access_records ADD COLUMN stored_at timestamptz;
ALTER TABLE records.checkpoints ADD COLUMN stored_at timestamptz;
ALTER TABLE records.attempt_outcomes ADD COLUMN stored_at timestamptz;

CREATE FUNCTION records.stamp_stored_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.stored_at := clock_timestamp();
    RETURN NEW;
END $$;

CREATE TRIGGER stored_at BEFORE INSERT ON records.access_records
    FOR EACH ROW EXECUTE FUNCTION records.stamp_stored_at();
CREATE TRIGGER stored_at BEFORE INSERT ON records.checkpoints
    FOR EACH ROW EXECUTE FUNCTION records.stamp_stored_at();
CREATE TRIGGER stored_at BEFORE INSERT ON records.attempt_outcomes
    FOR EACH ROW EXECUTE FUNCTION records.stamp_stored_at();

CREATE TABLE trust.revocations (
    party         text NOT NULL,
    signing_id    text NOT NULL,
    revoked_at    timestamptz NOT NULL,   -- from when the key no longer counts
    reason        text NOT NULL,
    stated_at     timestamptz,            -- the database's clock; NULL: carried over below
    hub_signature text                    -- NULL only for revocations carried over below
);
CREATE INDEX revocations_key ON trust.revocations (party, signing_id);

-- Revocations made before this version, without the hub's signature: the only unsigned
-- statements that count (`stated_at` is NULL for them alone).
INSERT INTO trust.revocations (party, signing_id, revoked_at, reason)
    SELECT party, signing_id, revoked_at, 'revoked before signed revocations'
    FROM trust.parties WHERE revoked_at IS NOT NULL;

CREATE FUNCTION trust.stamp_stated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.stated_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER stated_at BEFORE INSERT ON trust.revocations
    FOR EACH ROW EXECUTE FUNCTION trust.stamp_stated_at();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON trust.revocations
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

-- A registered key's entry never changes, except that it is revoked once.
CREATE FUNCTION trust.revoke_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'a registered key stays in the registry (revoke it instead)';
    END IF;
    IF OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL
        OR (NEW.party, NEW.signing_public, NEW.sealing_public, NEW.signing_id, NEW.sealing_id,
            NEW.issued_at, NEW.hub_signature)
           IS DISTINCT FROM
           (OLD.party, OLD.signing_public, OLD.sealing_public, OLD.signing_id, OLD.sealing_id,
            OLD.issued_at, OLD.hub_signature)
    THEN
        RAISE EXCEPTION 'a registered key is only ever revoked, once';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER revoke_once BEFORE UPDATE OR DELETE ON trust.parties
    FOR EACH ROW EXECUTE FUNCTION trust.revoke_once();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON trust.parties
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON trust.revocations TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON trust.revocations TO renkei_party;
    END IF;
END $$;
