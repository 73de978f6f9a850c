-- renkei schema, version 10: the registry of parties' public keys.
--
-- Each row is one party's (the hub's or an org's) public signing and sealing keys, signed by the
-- hub. A gate verifies permits against the hub key pinned in its own key file; the hub seals each
-- provider's code to the provider's sealing key found here; `renkei records verify` checks
-- signatures against it. A revoked key stays, with the moment it stopped counting.
CREATE SCHEMA IF NOT EXISTS trust;
CREATE TABLE trust.parties (
    party          text NOT NULL,
    signing_public text NOT NULL,
    sealing_public text NOT NULL,
    signing_id     text NOT NULL,
    sealing_id     text NOT NULL,
    issued_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    hub_signature  text NOT NULL,
    PRIMARY KEY (party, signing_id)
);
CREATE UNIQUE INDEX parties_current ON trust.parties (party) WHERE revoked_at IS NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT USAGE ON SCHEMA trust TO renkei_app;
        GRANT SELECT, INSERT, UPDATE ON trust.parties TO renkei_app;
    END IF;
END $$;
