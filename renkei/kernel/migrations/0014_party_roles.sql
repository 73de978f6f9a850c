-- renkei schema, version 14: a database role per party.
--
-- An agency's worker process works as its own role (renkei_org_<org>, a member of renkei_party):
-- it reads the whitelist, the registry and the public-key registry, works in its own schema,
-- and appends only to its own chain of access records and witness checkpoints (row-level
-- security). It cannot read the hub's identity tables (hub.subject_codes, hub.individuals) nor
-- anything else of the hub, and cannot write into another party's chain. The hub's processes
-- keep working as renkei_app. Where the owner may not create roles (a managed database), the
-- roles are skipped and signatures alone show another party's writes.
DO $$
DECLARE
    org text;
    member text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        BEGIN
            CREATE ROLE renkei_party NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role renkei_party: parties share the application role';
            RETURN;
        END;
    END IF;
    CREATE TABLE IF NOT EXISTS trust.db_roles (role text PRIMARY KEY, party text NOT NULL);
    GRANT SELECT ON trust.db_roles TO renkei_party, renkei_app;
    GRANT USAGE ON SCHEMA whitelist, registry, trust, records TO renkei_party;
    GRANT SELECT ON ALL TABLES IN SCHEMA whitelist, registry TO renkei_party;
    GRANT SELECT ON trust.parties TO renkei_party;
    GRANT SELECT, INSERT ON records.access_records, records.checkpoints, records.keepers
        TO renkei_party;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA records TO renkei_party;
    FOREACH org IN ARRAY ARRAY['city-minato', 'city-shibuya', 'kyokai-kenpo', 'jps'] LOOP
        member := 'renkei_org_' || replace(org, '-', '_');
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = member) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN IN ROLE renkei_party', member);
        END IF;
        INSERT INTO trust.db_roles (role, party) VALUES (member, org) ON CONFLICT DO NOTHING;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I',
                       'agency_' || replace(org, '-', '_'), member);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                       'agency_' || replace(org, '-', '_'), member);
        -- The login user works as the role (SET ROLE), as it does as renkei_app.
        EXECUTE format('GRANT %I TO %I', member, session_user);
    END LOOP;
END $$;

-- A party appends to its own chain only; the application role (the hub's processes) as before.
ALTER TABLE records.access_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE records.keepers ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        CREATE POLICY application ON records.access_records TO renkei_app
            USING (true) WITH CHECK (true);
        CREATE POLICY application ON records.checkpoints TO renkei_app
            USING (true) WITH CHECK (true);
        CREATE POLICY application ON records.keepers TO renkei_app
            USING (true) WITH CHECK (true);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        CREATE POLICY own_chain ON records.access_records TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user));
        -- Its own chain's head, and the hub's, which it witnesses.
        CREATE POLICY own_witness ON records.checkpoints TO renkei_party
            USING (true)
            WITH CHECK (signer = (SELECT party FROM trust.db_roles WHERE role = current_user)
                        AND keeper IN ('hub', signer));
        CREATE POLICY own_keeper ON records.keepers TO renkei_party
            USING (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user))
            WITH CHECK (keeper = (SELECT party FROM trust.db_roles WHERE role = current_user));
    END IF;
END $$;

-- Every chain's head (its position and hash, nothing else): what a witness signs. A party may
-- read it for every chain, though it may read the records of its own chain only.
CREATE FUNCTION records.chain_heads() RETURNS TABLE (keeper text, chain_seq bigint, record_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = records, pg_temp AS $$
    SELECT DISTINCT ON (a.keeper) a.keeper, a.chain_seq, a.record_hash
      FROM records.access_records a ORDER BY a.keeper, a.chain_seq DESC
$$;
REVOKE ALL ON FUNCTION records.chain_heads() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT EXECUTE ON FUNCTION records.chain_heads() TO renkei_party;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT EXECUTE ON FUNCTION records.chain_heads() TO renkei_app;
    END IF;
END $$;
