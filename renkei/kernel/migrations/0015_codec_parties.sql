-- renkei schema, version 15: each codec operator acts for one party, and reads only its payloads.
--
-- Payloads are sealed between two parties (see docs/trust.md). An operator belongs to one party
-- (the hub's platform operators, or an org's own) and the codec server decodes for that party
-- only, with that party's keys. The log says for which party, and which channels were asked.
ALTER TABLE codec.operators ADD COLUMN party text NOT NULL DEFAULT 'hub';
ALTER TABLE codec.requests ADD COLUMN party text;
ALTER TABLE codec.requests ADD COLUMN channels text[] NOT NULL DEFAULT '{}';
ALTER TABLE codec.requests ADD COLUMN opened integer NOT NULL DEFAULT 0;
