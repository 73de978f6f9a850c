-- renkei schema, version 6: the lifecycle of a BPF version.
--   draft -> conformance-passed -> approved -> operating -> retired
-- Each transition is made by the party entitled to it and recorded; a version passes
-- conformance only with a passing report of the kit for exactly its content.

ALTER TABLE registry.bpf_versions
    ADD COLUMN state text NOT NULL DEFAULT 'draft'
        CHECK (state IN ('draft', 'conformance-passed', 'approved', 'operating', 'retired')),
    ADD COLUMN author text,
    ADD COLUMN conformance_report_hash text;

CREATE TABLE registry.conformance_reports (
    id           bigserial PRIMARY KEY,
    bpf          text NOT NULL,
    version      integer NOT NULL,
    content_hash text NOT NULL,
    report_hash  text NOT NULL,
    passed       boolean NOT NULL,
    report       jsonb NOT NULL,
    run_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);
CREATE INDEX conformance_reports_version ON registry.conformance_reports (bpf, version);

CREATE TABLE registry.transitions (
    id         bigserial PRIMARY KEY,
    bpf        text NOT NULL,
    version    integer NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    actor      text NOT NULL,
    actor_role text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    note       text,
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);

-- The application appends reports and transitions, never rewrites them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE ON registry.conformance_reports, registry.transitions FROM renkei_app;
    END IF;
END $$;
