-- renkei schema, version 23: owners kept across versions, and who made each transition.
--
-- The lifecycle commands act as the signed-in operator's party and role (migration 0022 gave
-- operators a role) and record the operator by name.
--
-- A BPF's definer (and its co-definers, for a procedure under several ministries) is fixed when
-- its first version is registered; a version naming another definer is refused unless a
-- recorded transfer changed it.
ALTER TABLE registry.transitions ADD COLUMN operator text;

CREATE TABLE registry.owners (
    bpf         text PRIMARY KEY,
    definer     text NOT NULL,
    co_definers text[] NOT NULL DEFAULT '{}',
    changed_at  timestamptz NOT NULL DEFAULT now()
);
-- Owners of what is registered already: each BPF's first version's.
INSERT INTO registry.owners (bpf, definer, co_definers)
SELECT DISTINCT ON (bpf) bpf, definition->'owners'->>'definer',
       coalesce(ARRAY(SELECT jsonb_array_elements_text(definition->'owners'->'co_definers')), '{}')
  FROM registry.bpf_versions ORDER BY bpf, version;

CREATE TABLE registry.ownership_transfers (
    id          bigserial PRIMARY KEY,
    bpf         text NOT NULL REFERENCES registry.owners (bpf),
    from_definer text NOT NULL,
    to_definer  text NOT NULL,
    operator    text NOT NULL,
    actor       text NOT NULL,
    actor_role  text NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Each co-definer's own submission or approval of a version, before it moves on.
CREATE TABLE registry.co_signatures (
    id       bigserial PRIMARY KEY,
    bpf      text NOT NULL,
    version  integer NOT NULL,
    action   text NOT NULL,
    party    text NOT NULL,
    operator text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bpf, version, action, party),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE ON registry.ownership_transfers, registry.co_signatures
            FROM renkei_app;
    END IF;
END $$;

-- The conformance body's own voice: scenarios it adds to a version's kit, who ran each report,
-- and its approval as a signature over (version content hash, report hash).
ALTER TABLE registry.conformance_reports ADD COLUMN run_by text;

CREATE TABLE registry.kit_scenarios (
    id       bigserial PRIMARY KEY,
    bpf      text NOT NULL,
    version  integer NOT NULL,
    name     text NOT NULL,
    scenario jsonb NOT NULL,
    party    text NOT NULL,
    operator text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bpf, version, name),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);

CREATE TABLE registry.approvals (
    id           bigserial PRIMARY KEY,
    bpf          text NOT NULL,
    version      integer NOT NULL,
    content_hash text NOT NULL,
    report_hash  text NOT NULL,
    signer       text NOT NULL,
    signing_id   text NOT NULL,
    signature    text NOT NULL,
    operator     text,
    at           timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE ON registry.kit_scenarios, registry.approvals FROM renkei_app;
    END IF;
END $$;
