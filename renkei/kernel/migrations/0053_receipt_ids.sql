-- renkei schema, version 53: an org's role no longer chooses a receipt row's id, nor its size.
--
--  * An org's role inserted its receipts with every column, the id too: a hostile one could
--    take ids the shared sequence had not handed out yet, and each of those then failed
--    another provider's receipt as its gate kept it (a duplicate id), so its answer never
--    left. The ids are also the order the hub's collector takes the queue in. An org's role
--    now inserts only the receipt's own columns; the id is the sequence's.
--  * A receipt row's columns were of any length: a hostile org's role could keep rows of
--    megabytes (a "permit" of any JSON), which the hub's collector reads a batch of at a time
--    (and, failing on them, took again at every turn). Each column is now bounded far above
--    what a gate keeps (a digest and signatures of under a hundred characters, a permit of
--    about one kilobyte).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        REVOKE INSERT ON records.answer_receipts FROM renkei_party;
        GRANT INSERT (keeper, attempt_key, answer_digest, permit_signature, signature,
                      answered_at, permit)
            ON records.answer_receipts TO renkei_party;
    END IF;
END $$;

ALTER TABLE records.answer_receipts ADD CONSTRAINT receipt_sizes CHECK (
    octet_length(keeper) <= 200
    AND octet_length(attempt_key) <= 1000
    AND octet_length(answer_digest) <= 200
    AND octet_length(permit_signature) <= 200
    AND octet_length(signature) <= 200
    AND (permit IS NULL OR octet_length(permit::text) <= 16384)
);
