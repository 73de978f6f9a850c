-- renkei schema, version 30: each executor puts a version into operation for itself.
--
-- A version is operating once one executor has put it into operation; it starts, and gets
-- schedules, only for the executors that did (`renkei bpf operate BPF VERSION --as ORG`, once
-- per org). Before, one executor's `operate` put a role-executed version into operation for every
-- org of the role. An operating version keeps running for the org that put it into operation
-- (its recorded `operate` transition); every other org of the role puts it into operation for
-- itself.
CREATE TABLE registry.operated_by (
    bpf      text NOT NULL,
    version  integer NOT NULL,
    executor text NOT NULL,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bpf, version, executor),
    FOREIGN KEY (bpf, version) REFERENCES registry.bpf_versions (bpf, version)
);
INSERT INTO registry.operated_by (bpf, version, executor, since)
SELECT bpf, version, actor, min(at) FROM registry.transitions
 WHERE to_state = 'operating'
 GROUP BY bpf, version, actor;

-- Appended to, never rewritten, by the application (like the transitions).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE ON registry.operated_by FROM renkei_app;
    END IF;
END $$;
