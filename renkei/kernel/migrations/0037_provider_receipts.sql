-- renkei schema, version 37: "provided" rests on the provider's signed receipt.
--
--  * The hub's outcome of an attempt carries the provider's receipt when it says "provided":
--    the digest of the answer, the permit's signature it answered and the provider's signature
--    over both (the signature its answer carries). The hub checks it against the provider's
--    registered, unrevoked key before it writes "provided"; an executor's "provided" without a
--    receipt that holds is written as "unreceipted" (permitted, and no answer the provider
--    signed for it reached the hub).
--  * The provider's gate keeps its own receipt of each attempt it answered, under the
--    provider's name (one per attempt): comparing them with the hub's outcomes shows an
--    executor that hid an answered exchange (reported a failure, or nothing).
ALTER TABLE records.attempt_outcomes
    ADD COLUMN answer_digest    text,
    ADD COLUMN permit_signature text,
    ADD COLUMN receipt          text;
ALTER TABLE records.attempt_outcomes DROP CONSTRAINT attempt_outcomes_outcome_check;
ALTER TABLE records.attempt_outcomes ADD CONSTRAINT attempt_outcomes_outcome_check
    CHECK (outcome IN ('provided', 'denied', 'no_answer', 'failed', 'cancelled', 'unreceipted'));

CREATE TABLE records.answer_receipts (
    id               bigserial PRIMARY KEY,
    keeper           text NOT NULL,        -- the provider that answered
    attempt_key      text NOT NULL,
    answer_digest    text NOT NULL,
    permit_signature text NOT NULL,
    signature        text NOT NULL,        -- the provider's, over the permit's signature and digest
    answered_at      timestamptz NOT NULL,
    stored_at        timestamptz,
    UNIQUE (keeper, attempt_key)
);

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON records.answer_receipts
    FOR EACH ROW EXECUTE FUNCTION records.refuse_change();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON records.answer_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
CREATE TRIGGER stored_at BEFORE INSERT ON records.answer_receipts
    FOR EACH ROW EXECUTE FUNCTION records.stamp_stored_at();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON records.answer_receipts TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE records.answer_receipts_id_seq TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT, INSERT ON records.answer_receipts TO renkei_party;
        GRANT USAGE, SELECT ON SEQUENCE records.answer_receipts_id_seq TO renkei_party;
        ALTER TABLE records.answer_receipts ENABLE ROW LEVEL SECURITY;
        -- An org writes and reads only its own receipts; the platform's role reads them all.
        CREATE POLICY own_receipts ON records.answer_receipts FOR ALL TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user));
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
            CREATE POLICY platform_reads ON records.answer_receipts FOR ALL TO renkei_app
                USING (true) WITH CHECK (true);
        END IF;
    END IF;
END $$;
