-- renkei schema, version 44: records written first, chained behind (issue #16).
--
-- A linkage's transaction writes its access records without a chain position: each carries the
-- hash of its content (`entry_hash`) and its writer's signature over that hash, and is durable
-- and unique per (keeper, attempt) at once. The keeper's chainer (the hub's worker for the hub's
-- chain, an org's own worker for the org's, since only it holds the org's key) then gives a
-- batch of them their places: position, previous hash, record hash, and its own signature over
-- each link (`chained_by`, `link_signature`); the database stamps `chained_at` from its clock.
--
--  * A record is updated once, by its chainer, from unchained to chained, and in nothing else
--    (the append-only trigger allows exactly that, and only the chain columns may be granted).
--  * Records written before (`entry_hash` NULL) are chained when written, as they were.
ALTER TABLE records.access_records
    ADD COLUMN entry_hash text,
    ADD COLUMN chained_by text,
    ADD COLUMN link_signature text,
    ADD COLUMN chained_at timestamptz,
    ALTER COLUMN chain_seq DROP NOT NULL,
    ALTER COLUMN prev_hash DROP NOT NULL,
    ALTER COLUMN record_hash DROP NOT NULL;
ALTER TABLE records.access_records
    ADD CONSTRAINT chained_whole CHECK (
        (chain_seq IS NULL) = (prev_hash IS NULL) AND (chain_seq IS NULL) = (record_hash IS NULL)
    ),
    ADD CONSTRAINT unchained_has_entry CHECK (chain_seq IS NOT NULL OR entry_hash IS NOT NULL),
    ADD CONSTRAINT linked_by_someone CHECK ((chained_by IS NULL) = (link_signature IS NULL));

-- What a chainer looks for: a keeper's records not yet chained, in the order they were stored.
CREATE INDEX access_records_unchained ON records.access_records (keeper, id)
    WHERE chain_seq IS NULL;

CREATE OR REPLACE FUNCTION records.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.recorded_at < now() - (SELECT retention FROM records.policy) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'access records are kept for % and cannot be deleted before',
            (SELECT retention FROM records.policy) USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Chaining: an unchained record gets its place and its chainer's signature, once, and
    -- nothing else of it changes.
    IF OLD.chain_seq IS NULL AND OLD.chained_by IS NULL
        AND NEW.chain_seq IS NOT NULL AND NEW.chained_by IS NOT NULL
        AND (to_jsonb(NEW) - ARRAY['chain_seq', 'prev_hash', 'record_hash', 'chained_by',
                                   'link_signature', 'chained_at'])
            = (to_jsonb(OLD) - ARRAY['chain_seq', 'prev_hash', 'record_hash', 'chained_by',
                                     'link_signature', 'chained_at'])
    THEN
        NEW.chained_at := clock_timestamp();
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % is not allowed: records are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- A chain's head is its last chained record.
CREATE OR REPLACE FUNCTION records.chain_heads()
    RETURNS TABLE (keeper text, chain_seq bigint, record_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = records, pg_temp AS $$
    SELECT DISTINCT ON (a.keeper) a.keeper, a.chain_seq, a.record_hash
      FROM records.access_records a WHERE a.chain_seq IS NOT NULL
     ORDER BY a.keeper, a.chain_seq DESC
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT UPDATE (chain_seq, prev_hash, record_hash, chained_by, link_signature)
            ON records.access_records TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT UPDATE (chain_seq, prev_hash, record_hash, chained_by, link_signature)
            ON records.access_records TO renkei_party;
        -- An org chains its own chain, as itself.
        CREATE POLICY own_links ON records.access_records FOR UPDATE TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user)
                        AND chained_by = keeper);
    END IF;
END $$;
