-- renkei schema, version 50: the hub collects "provided" from the provider's own receipt
-- (issue #16): the executor's flow no longer tells it.
--
--  * The provider's gate keeps, with its receipt, the hub's signed permit it answered
--    (`permit`): what the hub needs to check the receipt as it checks one a flow forwards (the
--    permit is the hub's, for this very attempt, to this provider). Receipts kept before have
--    none and are never collected (their flows told their outcomes themselves).
--  * A receipt kept with a permit is queued for the hub's collector by the database itself
--    (a trigger, whoever inserts it): `records.receipts_to_collect` holds only the receipts not
--    yet looked at, so the collector finds new ones by its primary key, with no scan of the
--    receipts as they grow. The collector takes a batch (locked, skipping rows another collector
--    holds), records "provided" for each receipt that holds, and removes the batch from the
--    queue in the same transaction. The queue is work, not a record: the receipts themselves
--    stay append-only, and the queue is the platform's alone (an org neither reads nor
--    changes it).
ALTER TABLE records.answer_receipts ADD COLUMN permit jsonb;

CREATE TABLE records.receipts_to_collect (
    receipt_id bigint PRIMARY KEY  -- records.answer_receipts.id
);

CREATE FUNCTION records.queue_receipt() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = records, pg_temp AS $$
BEGIN
    IF NEW.permit IS NOT NULL THEN
        INSERT INTO records.receipts_to_collect (receipt_id) VALUES (NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER queue_for_collection AFTER INSERT ON records.answer_receipts
    FOR EACH ROW EXECUTE FUNCTION records.queue_receipt();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        -- UPDATE only for the row locks a collector takes on its batch (FOR UPDATE).
        GRANT SELECT, UPDATE, DELETE ON records.receipts_to_collect TO renkei_app;
    END IF;
END $$;
