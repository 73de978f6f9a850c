-- renkei schema, version 70: the append-only trigger checks a link without converting the row.
--
-- A record written unchained may change once, from unlinked to linked, in its chain columns
-- only (migrations 0044, 0067). The trigger checked that by turning the old and the new row
-- into JSON, without the chain columns, and comparing the two: some 40 µs of the database's
-- time a record, the largest part of what chaining one costs it (issue #16).
--
-- Now the new row, its chain columns taken back from the old, must be the old row byte for
-- byte (`*=`, record image equality: a NULL equals a NULL only, a value its own bytes only).
-- The check is the same and as general: the row's type is the table's, so a column added
-- later is compared as every other, and no list of the columns that may not change is kept.
-- It is stricter where the two differ: JSON took 1.0 and 1.00 as one number, the bytes do not.
--
-- A provider's receipt may be deleted past the retention period, as an access record may: the
-- trigger read every table's row as an access record's, and a receipt's DELETE failed on it.
--
-- Its names resolve in the system catalog only, as every trigger function's since migration 0059
-- (0067 replaced this one without its setting): no session's search_path can put its own `*=`
-- for the table's row type, or its own `clock_timestamp()`, before the catalog's.
CREATE OR REPLACE FUNCTION records.refuse_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unlinked records.access_records;  -- read only for access records
    kept_since timestamptz;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- A receipt has no recorded_at: since migration 0037 its DELETE failed on the field,
        -- past the retention period too. It is kept from when the database stored it.
        IF TG_TABLE_NAME = 'answer_receipts' THEN
            kept_since := coalesce(OLD.stored_at, OLD.answered_at);
        ELSE
            kept_since := OLD.recorded_at;
        END IF;
        IF kept_since < now() - (SELECT retention FROM records.policy) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '% are kept for % and cannot be deleted before',
            replace(TG_TABLE_NAME, '_', ' '), (SELECT retention FROM records.policy)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Chaining: an unchained record gets its place and its chainer's name (and, at a batch's
    -- end, its signature), once, and nothing else of it changes. Only access records are
    -- chained so (the other tables this guards have no such columns: they change in nothing).
    IF TG_TABLE_NAME = 'access_records' THEN
        IF OLD.chain_seq IS NULL AND OLD.chained_by IS NULL
            AND NEW.chain_seq IS NOT NULL AND NEW.chained_by IS NOT NULL
        THEN
            unlinked := NEW;
            unlinked.chain_seq := OLD.chain_seq;
            unlinked.prev_hash := OLD.prev_hash;
            unlinked.record_hash := OLD.record_hash;
            unlinked.chained_by := OLD.chained_by;
            unlinked.link_signature := OLD.link_signature;
            unlinked.link_from := OLD.link_from;
            unlinked.chained_at := OLD.chained_at;
            IF unlinked OPERATOR(pg_catalog.*=) OLD THEN
                NEW.chained_at := clock_timestamp();
                RETURN NEW;
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION '% on % is not allowed: records are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
