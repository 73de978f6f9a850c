-- renkei schema, version 42: the actions an org carries out, in the org registry.
--
-- An org carries out actions (a partner's `act` steps: whitelist/data/catalog/actions.yaml), each
-- on a basis the registry keeps with it (the provision, contract or terms under which the org
-- does it) and over a period, like the roles it holds and the items it serves (version 22).
-- They were read from the shipped catalog; `renkei init` now seeds them here from orgs.yaml, and
-- a platform operator adds and ends them (`renkei orgs add-act`, `renkei orgs end-act`, the API),
-- one transaction that bumps whitelist.version and notifies the running workers.
CREATE TABLE whitelist.org_acts (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL REFERENCES whitelist.orgs (id),
    action     text NOT NULL,
    basis      text NOT NULL CHECK (basis <> '' AND length(basis) <= 300),
    valid_from date,
    valid_to   date,
    CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX org_acts_org ON whitelist.org_acts (org);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        -- An act is ended by closing its period (an UPDATE of valid_to), never deleted.
        REVOKE DELETE ON whitelist.org_acts FROM renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON whitelist.org_acts TO renkei_party;
    END IF;
END $$;
