-- renkei schema, version 1: whitelist, BPF registry, hub (subjects and codes), access records.

CREATE SCHEMA IF NOT EXISTS whitelist;
CREATE TABLE whitelist.rows (
    id             text PRIMARY KEY,
    source         text NOT NULL,
    item           text NOT NULL,
    requester_role text NOT NULL,
    task           text NOT NULL,
    provider_role  text NOT NULL,
    info           text NOT NULL,
    legal_text     text NOT NULL,
    valid_from     date NOT NULL,
    valid_to       date,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX rows_lookup ON whitelist.rows (requester_role, task, provider_role, info);
-- One row, bumped on every change; workers compare it to the version of their in-memory index.
CREATE TABLE whitelist.version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO whitelist.version (version) VALUES (0);

CREATE SCHEMA IF NOT EXISTS registry;
CREATE TABLE registry.bpf_versions (
    bpf          text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    content_hash text NOT NULL,
    source_name  text NOT NULL,
    source_text  text NOT NULL,
    definition   jsonb NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bpf, version)
);

CREATE SCHEMA IF NOT EXISTS hub;
-- A subject is an opaque id; each org knows the subject only by its own code.
CREATE TABLE hub.subject_codes (
    subject_id uuid NOT NULL,
    org        text NOT NULL,
    code       text NOT NULL,
    PRIMARY KEY (subject_id, org),
    UNIQUE (org, code)
);

CREATE SCHEMA IF NOT EXISTS records;
CREATE TABLE records.access_records (
    seq            bigserial PRIMARY KEY,
    attempt_key    text NOT NULL UNIQUE,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz NOT NULL,
    requester      text NOT NULL,
    provider       text NOT NULL,
    task           text NOT NULL,
    info           text NOT NULL,
    legal_reference text NOT NULL,
    whitelist_row  text,
    subject_code   text NOT NULL,
    bpf            text NOT NULL,
    bpf_version    integer NOT NULL,
    content_hash   text NOT NULL,
    workflow_id    text NOT NULL,
    run_id         text NOT NULL,
    step           text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    reason         text NOT NULL
);
CREATE INDEX access_records_subject ON records.access_records (provider, subject_code);
CREATE INDEX access_records_bpf ON records.access_records (bpf, bpf_version);
CREATE INDEX access_records_workflow ON records.access_records (workflow_id);
