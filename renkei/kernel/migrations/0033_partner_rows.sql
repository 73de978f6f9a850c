-- renkei schema, version 33: partner rows and the sample private partner.
--
-- A whitelist row may be of scope 'consent': a partner org's act (an `act` step) permitted only
-- on the citizen's own attested consent (whitelist/data/partners). The sample private partner
-- (sample-denki, a fictional electricity retailer) gets a database role like every party's: it
-- appends to its own chain of access records only; it has no schema of its own and no table of
-- subject codes (a private partner never receives one).
ALTER TABLE whitelist.rows DROP CONSTRAINT IF EXISTS rows_scope_check;
ALTER TABLE whitelist.rows ADD CONSTRAINT rows_scope_check
    CHECK (scope IN ('between-bodies', 'within-body', 'consent'));

DO $$
DECLARE
    member text := 'renkei_org_sample_denki';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        RETURN;  -- parties share the application role (see version 14)
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = member) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN IN ROLE renkei_party', member);
    END IF;
    INSERT INTO trust.db_roles (role, party) VALUES (member, 'sample-denki') ON CONFLICT DO NOTHING;
    EXECUTE format('GRANT %I TO %I', member, session_user);
END $$;
