-- renkei schema, version 53: an org's role no longer chooses a receipt row's id.
--
--  * An org's role inserted its receipts with every column, the id too: a hostile one could
--    take ids the shared sequence had not handed out yet, and each of those then failed
--    another provider's receipt as its gate kept it (a duplicate id), so its answer never
--    left. The ids are also the order the hub's collector takes the queue in. An org's role
--    now inserts only the receipt's own columns; the id is the sequence's.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        REVOKE INSERT ON records.answer_receipts FROM renkei_party;
        GRANT INSERT (keeper, attempt_key, answer_digest, permit_signature, signature,
                      answered_at, permit)
            ON records.answer_receipts TO renkei_party;
    END IF;
END $$;
