-- renkei schema, version 49: no org is registered under the citizens' code space.
--
-- The hub derives each org's code for a person from the org's id (renkei.kernel.pseudonyms), and
-- the citizens' own code space, the code a citizen signs in with, is `portal`. An org of the
-- registry under that id would be given, as its code for each person it asks or answers about,
-- that person's portal sign-in code: it could read their records and answer their flows as them.
-- The application's role writes the registry, so the refusal is the table's own (as for `hub`,
-- version 48).
ALTER TABLE whitelist.orgs ADD CONSTRAINT not_the_citizens CHECK (id <> 'portal');
