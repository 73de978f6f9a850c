-- renkei schema, version 19: the review (見直し) of every operating BPF version after a change
-- of the law.
--
-- After each load of a whitelist source (whitelist.loads), every operating version is validated
-- again on the day of the load, at the load's effective date and on every later day the law
-- changes (a source or a row begins or ends); the outcome is kept here, one row per version,
-- load and day. The newest load's rows say on which days a version admits no new run
-- (renkei.bpf.admission): from a day it does not conform on, until a day it does again. The
-- definer of every version the change touches finds a message in its outbox (hub.reminders,
-- kind 'review').
CREATE TABLE registry.reviews (
    id          bigserial PRIMARY KEY,
    load_id     bigint NOT NULL REFERENCES whitelist.loads (id),
    source      text NOT NULL,       -- what changes the law that day ("source X begins", …)
    bpf         text NOT NULL,
    version     integer NOT NULL,
    effective   date NOT NULL,
    conformant  boolean NOT NULL,
    affected    boolean NOT NULL,    -- the load changed rows its queries name, or its conformance
    executors   text[] NOT NULL,
    problems    jsonb NOT NULL,      -- validation's errors at the effective date
    reviewed_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);
-- Admission reads the newest load's rows of a version for a day, on every start.
CREATE INDEX reviews_version ON registry.reviews (bpf, version, load_id, effective);

-- The outbox carries review messages beside reminders; a review message names no subject.
ALTER TABLE hub.reminders ADD COLUMN kind text NOT NULL DEFAULT 'reminder'
    CHECK (kind IN ('reminder', 'review'));
ALTER TABLE hub.reminders ADD COLUMN note text;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT ON registry.reviews TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE registry.reviews_id_seq TO renkei_app;
        REVOKE UPDATE, DELETE ON registry.reviews FROM renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON registry.reviews TO renkei_party;
    END IF;
END $$;
