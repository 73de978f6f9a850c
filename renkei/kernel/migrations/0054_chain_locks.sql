-- renkei schema, version 54: the chains are serialised by row locks an org's role cannot take.
--
-- Each chain's writers took a PostgreSQL advisory lock, and advisory locks are open to every
-- role: a hostile org's role could take the hub's chain's lock, or the outcomes chain's, and hold
-- it, and every hub record and every outcome (the hub's collector of receipts with them) then
-- waited until its session ended. A chain's writers now lock a row instead (SELECT ... FOR NO
-- KEY UPDATE, which needs UPDATE privilege and, under row-level security, a policy showing the
-- row):
--
--  * a keeper's chain: its row in records.keepers. An org's role sees (so locks) only its own
--    keeper's row (version 14's policy), which its own gate needs to chain its records; the
--    hub's row and every other org's are beyond it. The table stays append-only: its trigger
--    refuses every UPDATE statement, so the privilege serves the lock alone.
--  * the outcomes chain, and billing's issuing of a month: a row each in records.platform_locks,
--    the platform's alone (no privilege of any kind for an org's role).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT UPDATE (keeper) ON records.keepers TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT UPDATE (keeper) ON records.keepers TO renkei_party;
    END IF;
END $$;

CREATE TABLE records.platform_locks (name text PRIMARY KEY);
INSERT INTO records.platform_locks (name) VALUES ('outcomes');
REVOKE ALL ON records.platform_locks FROM PUBLIC;
-- Rows are added (a month's issuing) and locked, never changed nor removed.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON records.platform_locks
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_always();
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        REVOKE ALL ON records.platform_locks FROM renkei_party;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT, UPDATE (name) ON records.platform_locks TO renkei_app;
    END IF;
END $$;
