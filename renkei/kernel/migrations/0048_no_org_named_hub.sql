-- renkei schema, version 48: no org is registered under the platform's own party id.
--
-- The hub's party id is `hub` (its chain of records, its channel, its keys' party). An org of
-- the registry under that id would get, from trust.make_party_role (version 41), a database role
-- that trust.db_roles maps to the hub: its row-level security then admits the hub's chain of
-- every citizen's records, and whoever is given its login (`renkei agencies db-login hub`)
-- reads them. The application's role writes the registry, so the refusal is the table's own.
ALTER TABLE whitelist.orgs ADD CONSTRAINT not_the_platform CHECK (id <> 'hub');
