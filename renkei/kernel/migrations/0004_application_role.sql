-- renkei schema, version 4: the application role.
--
-- renkei's processes work as `renkei_app` (renkei.db.create_pool sets it on every connection when
-- the login user is a member): every table's data may be read and written, except that access
-- records, checkpoints and the codec request log may only be read and appended to; the retention
-- policy only read. Schema changes and the retention policy belong to the owner, who runs the
-- migrations. Where the owner may not create roles (a managed database), the role is skipped and
-- the append-only triggers still hold.

DO $$
DECLARE
    s text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        BEGIN
            CREATE ROLE renkei_app NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role renkei_app: the append-only triggers alone protect the records';
            RETURN;
        END;
    END IF;
    FOREACH s IN ARRAY ARRAY['whitelist', 'registry', 'hub', 'records', 'codec',
                             'agency_city_minato', 'agency_city_shibuya',
                             'agency_kyokai_kenpo', 'agency_jps'] LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO renkei_app', s);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO renkei_app', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO renkei_app', s);
        IF s IN ('records') THEN
            EXECUTE format('GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA %I TO renkei_app', s);
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT ON TABLES TO renkei_app', s);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO renkei_app', s);
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO renkei_app', s);
        END IF;
    END LOOP;
    REVOKE INSERT ON records.policy FROM renkei_app;
    REVOKE UPDATE, DELETE ON codec.requests FROM renkei_app;
    GRANT SELECT ON public.renkei_migrations TO renkei_app;
END $$;
