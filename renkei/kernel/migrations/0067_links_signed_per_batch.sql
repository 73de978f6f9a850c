-- renkei schema, version 67: a chainer signs each batch of links once (issue #16).
--
-- The keeper's chainer gave every record it linked its own Ed25519 signature: on one chain,
-- that was half of the signatures a record costs. Each link's record hash covers the one before
-- it, so one signature over the last link of a batch covers every link of that batch, as
-- X-Road's message log signs a batch's root. That signature now names the batch it covers: the
-- last link carries `link_from`, the first place of its batch, and its `link_signature` is over
-- the keeper, both places and its record hash (`renkei/links/v1`). The links before it in the
-- batch carry their chainer (`chained_by`) and no signature of their own.
--
--  * `verify` takes a link without a signature only inside a batch its keeper signed: one that
--    whoever else linked (the application's role may set the columns) is reported, as before,
--    even when the keeper's chainer goes on after it.
--  * Links signed one by one (`link_from` NULL) verify as they did.
--  * Only a record written unchained carries a link, and only once placed: a row inserted with
--    a chainer's name (which would stall its keeper's chainer for good, the row no longer
--    changing from unlinked to linked), or a record chained as written carrying a batch's end
--    (to close a run of links someone else set), is refused.
--  * The append-only trigger is shared with other tables: its chaining branch reads the chain
--    columns of access records only.
ALTER TABLE records.access_records ADD COLUMN link_from bigint;
-- A link belongs to a record written unchained, once it has its place: none on a record
-- waiting for its place (its chainer could not link it then: the row may change only from
-- unlinked to linked), none on a record chained as it was written. No chainer of renkei ever
-- wrote such a row: one found here was set by hand, and the upgrade stops, naming it.
DO $$
DECLARE
    found text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO found FROM (
        SELECT id FROM records.access_records
         WHERE NOT ((chain_seq IS NOT NULL AND entry_hash IS NOT NULL)
                    OR (chained_by IS NULL AND link_signature IS NULL))
         ORDER BY id LIMIT 20
    ) AS t;
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'access records (id %) carry a chainer''s link although chained as'
            ' written or still waiting for their place: no chainer wrote them so; run'
            ' renkei records verify, set them aside, then upgrade', found
            USING ERRCODE = 'check_violation';
    END IF;
END $$;
ALTER TABLE records.access_records
    DROP CONSTRAINT linked_by_someone,
    ADD CONSTRAINT linked_by_someone CHECK (
        chained_by IS NOT NULL OR (link_signature IS NULL AND link_from IS NULL)
    ),
    ADD CONSTRAINT linked_once_placed CHECK (
        (chain_seq IS NOT NULL AND entry_hash IS NOT NULL)
        OR (chained_by IS NULL AND link_signature IS NULL AND link_from IS NULL)
    ),
    ADD CONSTRAINT a_batch_signed_at_its_end CHECK (
        link_from IS NULL OR (link_signature IS NOT NULL AND link_from BETWEEN 1 AND chain_seq)
    );

CREATE OR REPLACE FUNCTION records.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.recorded_at < now() - (SELECT retention FROM records.policy) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'access records are kept for % and cannot be deleted before',
            (SELECT retention FROM records.policy) USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Chaining: an unchained record gets its place and its chainer's name (and, at a batch's
    -- end, its signature), once, and nothing else of it changes. Only access records are
    -- chained so (the other tables this guards have no such columns: they change in nothing).
    IF TG_TABLE_NAME = 'access_records' THEN
        IF OLD.chain_seq IS NULL AND OLD.chained_by IS NULL
            AND NEW.chain_seq IS NOT NULL AND NEW.chained_by IS NOT NULL
            AND (to_jsonb(NEW) - ARRAY['chain_seq', 'prev_hash', 'record_hash', 'chained_by',
                                       'link_signature', 'link_from', 'chained_at'])
                = (to_jsonb(OLD) - ARRAY['chain_seq', 'prev_hash', 'record_hash', 'chained_by',
                                         'link_signature', 'link_from', 'chained_at'])
        THEN
            NEW.chained_at := clock_timestamp();
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION '% on % is not allowed: records are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT UPDATE (link_from) ON records.access_records TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT UPDATE (link_from) ON records.access_records TO renkei_party;
    END IF;
END $$;
