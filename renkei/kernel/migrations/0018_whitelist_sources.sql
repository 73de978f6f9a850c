-- renkei schema, version 18: the legal sources of the whitelist, as data.
--
-- A source is a table or an ordinance in force for a period (valid_to exclusive, NULL open): the
-- 2015 text of Annex Table 2, the ordinance under Article 19(8) that replaced it on 2024-05-27, a
-- municipality's ordinance. Its rows are in force only while it is. `citation` is how a row of
-- it is cited (a template with {item}); a stand-in (stand_in_from set) is cited as such on dates
-- from then on, when the law in force is a newer source that is not loaded. Every load is kept
-- in whitelist.loads: who, when, the file's hash and what it changed. Rows may name an
-- ordinance-level task and information under their statutory ones (sub_task, sub_info).
CREATE TABLE whitelist.sources (
    id            text PRIMARY KEY,
    title         text NOT NULL,
    citation      text NOT NULL,
    valid_from    date NOT NULL,
    valid_to      date,
    stand_in_from date,
    stand_in_note text,
    supersedes    text REFERENCES whitelist.sources (id),
    content_hash  text NOT NULL,
    loaded_by     text NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    CHECK (supersedes IS NULL OR supersedes <> id)
);

CREATE TABLE whitelist.loads (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL REFERENCES whitelist.sources (id),
    file_name    text NOT NULL,
    content_hash text NOT NULL,
    loaded_by    text NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    against      text,              -- the source the diff compares with
    effective    date NOT NULL,     -- from when the change counts (the review's date)
    rows         integer NOT NULL,
    added        integer NOT NULL,
    removed      integer NOT NULL,
    changed      integer NOT NULL,
    diff         jsonb NOT NULL     -- the diff's lines, as printed
);
CREATE INDEX loads_source ON whitelist.loads (source, id);

ALTER TABLE whitelist.rows ADD COLUMN sub_task text;
ALTER TABLE whitelist.rows ADD COLUMN sub_info text;

-- The loads are history: appended, never rewritten. Parties read sources as they read rows.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON whitelist.sources TO renkei_app;
        GRANT SELECT, INSERT ON whitelist.loads TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE whitelist.loads_id_seq TO renkei_app;
        REVOKE UPDATE, DELETE ON whitelist.loads FROM renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON whitelist.sources, whitelist.loads TO renkei_party;
    END IF;
END $$;
