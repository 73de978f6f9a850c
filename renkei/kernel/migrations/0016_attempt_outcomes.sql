-- renkei schema, version 16: what became of each linkage attempt.
--
-- The requester's and the hub's records are written when the hub decides (allowed or denied),
-- before the provider is asked; they are never changed. What became of an allowed attempt
-- (the provider's signed answer verified, no answer in time, failed, cancelled) is appended
-- here by the hub when the flow learns it: one row per attempt, in the hub's own hash chain of
-- outcomes, signed with the hub's key, bound to the hub's record of the attempt by its hash.
CREATE TABLE records.attempt_outcomes (
    id           bigserial PRIMARY KEY,
    attempt_key  text NOT NULL UNIQUE,
    outcome      text NOT NULL
        CHECK (outcome IN ('provided', 'denied', 'no_answer', 'failed', 'cancelled')),
    record_hash  text NOT NULL,           -- the hub's access record of the attempt
    chain_seq    bigint NOT NULL UNIQUE,
    prev_hash    text NOT NULL,
    outcome_hash text NOT NULL,           -- SHA-256 over prev_hash and every field above
    recorded_at  timestamptz NOT NULL,
    signer       text NOT NULL,
    signature    text NOT NULL            -- the signer's Ed25519 over the outcome's hash
);

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON records.attempt_outcomes
    FOR EACH ROW EXECUTE FUNCTION records.refuse_change();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON records.attempt_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON records.attempt_outcomes TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE records.attempt_outcomes_id_seq TO renkei_app;
    END IF;
END $$;
