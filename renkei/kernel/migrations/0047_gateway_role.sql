-- renkei schema, version 47: the gateway's own database role.
--
-- `renkei gateway` reads the hub's signed revocations of TLS certificates (trust.revocations,
-- migration 0026) and nothing else: the role renkei_gateway may read that one table. Its login
-- (`renkei init --db-logins` with a gateway.password file) is a member of this role only. Where
-- the owner may not create roles (a managed database), the gateway shares the application role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_gateway') THEN
        BEGIN
            CREATE ROLE renkei_gateway NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role renkei_gateway: the gateway shares the application role';
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA trust TO renkei_gateway;
    GRANT SELECT ON trust.revocations TO renkei_gateway;
    -- The login user works as the role (SET ROLE), as it does as renkei_app.
    EXECUTE format('GRANT renkei_gateway TO %I', session_user);
END $$;
