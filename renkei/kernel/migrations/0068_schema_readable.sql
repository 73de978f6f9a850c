-- renkei schema, version 68: every process may read which migrations the database has.
--
-- A worker of a release started on a database its release's migrations have not reached yet
-- (`renkei init` not run since the upgrade) failed each write on a column it expected, one
-- linkage at a time. It now reads the migrations applied when it starts and stops there, naming
-- the missing ones. An org's role may not read `public.renkei_migrations` itself: this function
-- answers their names, and nothing else.
CREATE FUNCTION public.renkei_migrations_applied() RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT name FROM public.renkei_migrations
$$;
REVOKE ALL ON FUNCTION public.renkei_migrations_applied() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT EXECUTE ON FUNCTION public.renkei_migrations_applied() TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT EXECUTE ON FUNCTION public.renkei_migrations_applied() TO renkei_party;
    END IF;
END $$;
