-- renkei schema, version 12: records no one else can forge.
--
--  * each record carries the party that wrote it (the keeper, or the hub for a requester's side)
--    and that party's Ed25519 signature over the record's hash; verify refuses a record no
--    entitled party signed, and an unsigned one after signed ones;
--  * checkpoints are witness signatures: the hub signs every org's chain head, each org the
--    hub's and its own, so a chain rewritten even with its writer's key differs from what a
--    witness signed;
--  * the keeper registry remembers every chain ever started, so one that vanishes whole is seen.
ALTER TABLE records.access_records ADD COLUMN signer text, ADD COLUMN signature text;
ALTER TABLE records.access_records
    ADD CONSTRAINT signed_by_someone CHECK ((signer IS NULL) = (signature IS NULL));

ALTER TABLE records.checkpoints ADD COLUMN signer text;  -- NULL: the hub (older checkpoints)
ALTER TABLE records.checkpoints DROP CONSTRAINT checkpoints_pkey;
CREATE UNIQUE INDEX checkpoints_witness
    ON records.checkpoints (keeper, chain_seq, coalesce(signer, 'hub'));

CREATE TABLE records.keepers (
    keeper     text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO records.keepers (keeper, first_seen)
    SELECT keeper, min(recorded_at) FROM records.access_records GROUP BY keeper;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON records.keepers TO renkei_app;
    END IF;
END $$;

-- A chain once started stays in the registry: no update, no delete.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON records.keepers
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
