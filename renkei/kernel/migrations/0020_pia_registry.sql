-- renkei schema, version 20: the registry of specific personal information protection
-- assessments (特定個人情報保護評価, PIA: 番号法第28条).
--
-- Each org's PIA for a task: its level (基礎項目評価 basic, 重点項目評価 priority, 全項目評価 full),
-- the day it was approved, the day its next review is due, and whether it stands (active) or was
-- withdrawn. Every change is a new row of controls.pia_events, never an update: who recorded it,
-- when, and what it said stay readable for ever; the PIA in force is each (org, task)'s latest
-- row (controls.pias). A write bumps controls.version and notifies `renkei_controls`, so running
-- workers pick the change up without a restart (whitelist.controls_store.LiveControls).
CREATE SCHEMA IF NOT EXISTS controls;

CREATE TABLE controls.version (
    version    bigint NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO controls.version (version) VALUES (0);

CREATE TABLE controls.pia_events (
    seq         bigserial PRIMARY KEY,
    org         text NOT NULL,
    task        text NOT NULL,
    level       text NOT NULL CHECK (level IN ('basic', 'priority', 'full')),
    approved_on date NOT NULL,
    review_due  date NOT NULL CHECK (review_due >= approved_on),
    status      text NOT NULL CHECK (status IN ('active', 'withdrawn')),
    note        text NOT NULL DEFAULT '',
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pia_events_latest ON controls.pia_events (org, task, seq DESC);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON controls.pia_events
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();

-- The PIA each (org, task) has now: its latest event.
CREATE VIEW controls.pias AS
    SELECT DISTINCT ON (org, task) * FROM controls.pia_events ORDER BY org, task, seq DESC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT USAGE ON SCHEMA controls TO renkei_app;
        GRANT SELECT ON controls.version, controls.pias TO renkei_app;
        GRANT UPDATE ON controls.version TO renkei_app;
        GRANT SELECT, INSERT ON controls.pia_events TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE controls.pia_events_seq_seq TO renkei_app;
    END IF;
    -- A provider's gate decides with them too (activities.gate): parties read, never write.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT USAGE ON SCHEMA controls TO renkei_party;
        GRANT SELECT ON controls.version, controls.pia_events, controls.pias TO renkei_party;
    END IF;
END $$;
