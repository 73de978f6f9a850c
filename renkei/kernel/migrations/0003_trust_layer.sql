-- renkei schema, version 3: the trust layer.
--  * individual numbers, kept only as a keyed hash, each naming one hub subject;
--  * access records kept per party (requester, provider, hub), hash-chained per keeping party,
--    append-only, with signed checkpoints and a retention policy;
--  * codec operators and the log of every decode request.

CREATE TABLE hub.individuals (
    number_hash text PRIMARY KEY,          -- HMAC of the individual number under a hub key
    subject_id  uuid NOT NULL UNIQUE,
    enrolled_at timestamptz NOT NULL DEFAULT now()
);

-- The records of version 1 (one row per attempt, provider's code only) are kept as they were.
ALTER TABLE records.access_records RENAME TO access_records_v1;
ALTER INDEX records.access_records_subject RENAME TO access_records_v1_subject;
ALTER INDEX records.access_records_bpf RENAME TO access_records_v1_bpf;
ALTER INDEX records.access_records_workflow RENAME TO access_records_v1_workflow;

CREATE TABLE records.access_records (
    id              bigserial PRIMARY KEY,
    keeper          text NOT NULL,         -- the party keeping the record: an org id, or 'hub'
    chain_seq       bigint NOT NULL CHECK (chain_seq > 0),
    prev_hash       text NOT NULL,
    record_hash     text NOT NULL,
    attempt_key     text NOT NULL,
    recorded_at     timestamptz NOT NULL,
    decided_at      timestamptz NOT NULL,
    requester       text NOT NULL,
    provider        text NOT NULL,
    task            text NOT NULL,
    info            text NOT NULL,
    legal_reference text NOT NULL,
    whitelist_row   text,
    subject_code    text NOT NULL,         -- the keeper's own code (the hub: its subject id)
    bpf             text NOT NULL,
    bpf_version     integer NOT NULL,
    content_hash    text NOT NULL,
    workflow_id     text NOT NULL,
    run_id          text NOT NULL,
    step            text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    reason          text NOT NULL,
    hold_until      timestamptz,           -- hidden from the citizen until then
    hold_reason     text,
    UNIQUE (keeper, chain_seq),
    UNIQUE (keeper, attempt_key),
    CHECK ((hold_until IS NULL) = (hold_reason IS NULL))
);
CREATE INDEX access_records_subject ON records.access_records (keeper, subject_code, decided_at DESC);
CREATE INDEX access_records_workflow ON records.access_records (workflow_id);
CREATE INDEX access_records_bpf ON records.access_records (bpf, bpf_version);

CREATE TABLE records.checkpoints (
    keeper      text NOT NULL,
    chain_seq   bigint NOT NULL,
    record_hash text NOT NULL,
    signed_at   timestamptz NOT NULL,
    key_id      text NOT NULL,
    signature   text NOT NULL,             -- Ed25519 over keeper|chain_seq|record_hash|signed_at
    PRIMARY KEY (keeper, chain_seq)
);

CREATE TABLE records.policy (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retention interval NOT NULL CHECK (retention >= interval '1 year')
);
INSERT INTO records.policy (retention) VALUES (interval '7 years');

-- Append-only: no update, ever; no delete before the retention period has passed.
CREATE FUNCTION records.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.recorded_at < now() - (SELECT retention FROM records.policy) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'access records are kept for % and cannot be deleted before',
            (SELECT retention FROM records.policy) USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION '% on % is not allowed: records are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON records.access_records
    FOR EACH ROW EXECUTE FUNCTION records.refuse_change();
CREATE FUNCTION records.refuse_always() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: it is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON records.access_records
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON records.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
REVOKE UPDATE, DELETE, TRUNCATE ON records.access_records, records.checkpoints FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS codec;
CREATE TABLE codec.operators (
    name       text PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,       -- sha256 of the bearer token; the token is shown once
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE codec.requests (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    operator    text,                      -- NULL: refused, no valid token
    action      text NOT NULL CHECK (action IN ('encode', 'decode')),
    namespace   text,
    payloads    integer NOT NULL,
    granted     boolean NOT NULL,
    client_addr text,
    user_agent  text
);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON codec.requests
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
