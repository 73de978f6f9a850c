-- Whom a whitelist row lets exchange. Annex Table 2 governs linkages between two bodies; a
-- body's own use of its records under its own ordinance (番号法第9条第2項) permits nothing
-- between two bodies, so such a row matches only when requester and provider are one org.
ALTER TABLE whitelist.rows
    ADD COLUMN scope text NOT NULL DEFAULT 'between-bodies'
        CHECK (scope IN ('between-bodies', 'within-body'));
UPDATE whitelist.rows SET scope = 'within-body' WHERE source = 'renkei-local';
UPDATE whitelist.version SET version = version + 1, changed_at = now();
