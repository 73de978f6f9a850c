-- renkei schema, version 41: an org added at run time gets its own database role.
--
-- Version 14 made a role for each sample org (renkei_org_<org>, a member of renkei_party), and
-- version 33 one for the sample private partner. An org the registry adds later (`renkei orgs
-- add`, POST /api/orgs) gets the same, in the transaction that adds it: whitelist.orgs.add calls
-- trust.make_party_role. The application's role (renkei_app) may not create roles; the function
-- runs as the schema's owner, does only this, and only for an org the registry holds.
--
-- What the role gets is what the sample orgs' roles get: membership of renkei_party (the
-- whitelist, the registry, the public keys, the controls, its own chain of access records) and,
-- for an org that holds data (any kind but private), a schema of its own, agency_<org>, where it
-- reads and writes the tables the owner makes for it. The owner works as the role (SET ROLE), as
-- it does as the samples'; `renkei agencies db-login ORG` gives the org a login of its own.
-- Where the owner may not create roles (a managed database, no renkei_party), nothing is made
-- and the function says so by returning NULL.
CREATE FUNCTION trust.make_party_role(org text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    member text := 'renkei_org_' || replace(org, '-', '_');
    own_schema text := 'agency_' || replace(org, '-', '_');
    org_kind text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        RETURN NULL;  -- parties share the application role (see version 14)
    END IF;
    -- An id is lower-case words joined by '-' (whitelist.models.ID_PATTERN); its login
    -- (renkei_login_<org>) must fit PostgreSQL's 63 bytes, or two orgs would share one name.
    IF org !~ '^[a-z0-9]+(-[a-z0-9]+)*$' OR length('renkei_login_' || org) > 63 THEN
        RAISE EXCEPTION 'not an org id for a database role: %', org;
    END IF;
    SELECT kind INTO org_kind FROM whitelist.orgs WHERE id = org;
    IF org_kind IS NULL THEN
        RAISE EXCEPTION 'no org % in the registry', org;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = member) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN IN ROLE renkei_party', member);
    END IF;
    INSERT INTO trust.db_roles (role, party) VALUES (member, org) ON CONFLICT DO NOTHING;
    IF org_kind <> 'private' THEN  -- a private partner holds no one's data here (version 33)
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', own_schema);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', own_schema, member);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                       own_schema, member);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                       ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', own_schema, member);
    END IF;
    EXECUTE format('GRANT %I TO %I', member, current_user);
    RETURN member;
END $$;
REVOKE ALL ON FUNCTION trust.make_party_role(text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT EXECUTE ON FUNCTION trust.make_party_role(text) TO renkei_app;
    END IF;
END $$;
