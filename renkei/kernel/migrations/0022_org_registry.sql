-- renkei schema, version 22: the org registry, live.
--
-- Orgs were package data; now they live here (seeded from whitelist/data/catalog/orgs.yaml by
-- `renkei init`), so an org is added, changed, merged or retired without touching the package.
-- Every change bumps whitelist.version and notifies `renkei_whitelist`: running workers reload
-- their view of the orgs with the whitelist's index, without a restart.
--
-- Roles held and info items served carry their validity (valid_to exclusive, NULL open;
-- valid_from NULL: since before any linkage). A merger closes the predecessor's roles on its
-- date, opens them for the successor from that date, and links the two.
--
-- Onboarding: registered -> contract-tested -> certified -> active -> suspended / retired; the
-- hub lets only an active org ask or answer. A contract test is kept with its report and hash;
-- a certificate is the conformance body's signature over (org, served items, report hash).
--
-- An operator acts for one party in one role: a platform operator (the hub's), the conformance
-- body, or an org's definer or executor; the commands that change who may do what act as the
-- signed-in operator and record its name.
ALTER TABLE codec.operators ADD COLUMN role text NOT NULL DEFAULT 'platform-operator'
    CHECK (role IN ('platform-operator', 'conformance-body', 'definer', 'executor'));
UPDATE codec.operators SET role = 'executor' WHERE party <> 'hub';

CREATE TABLE whitelist.orgs (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    ja         text NOT NULL CHECK (ja <> ''),
    en         text NOT NULL CHECK (en <> ''),
    kind       text NOT NULL
        CHECK (kind IN ('national', 'prefectural', 'municipal', 'public-body', 'private')),
    status     text NOT NULL DEFAULT 'registered'
        CHECK (status IN ('registered', 'contract-tested', 'certified', 'active', 'suspended',
                          'retired')),
    successor  text REFERENCES whitelist.orgs (id),
    merged_on  date,
    created_at timestamptz NOT NULL DEFAULT now(),
    changed_at timestamptz NOT NULL DEFAULT now(),
    CHECK (successor IS NULL OR successor <> id)
);

CREATE TABLE whitelist.org_roles (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL REFERENCES whitelist.orgs (id),
    role       text NOT NULL,
    valid_from date,
    valid_to   date,
    CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_from < valid_to)
);
CREATE INDEX org_roles_org ON whitelist.org_roles (org);

CREATE TABLE whitelist.org_serves (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL REFERENCES whitelist.orgs (id),
    info       text NOT NULL,
    valid_from date,
    valid_to   date,
    CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_from < valid_to)
);
CREATE INDEX org_serves_org ON whitelist.org_serves (org);

-- Who changed what, appended only.
CREATE TABLE whitelist.org_events (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL REFERENCES whitelist.orgs (id),
    action     text NOT NULL,
    actor      text NOT NULL,
    actor_role text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX org_events_org ON whitelist.org_events (org);

CREATE TABLE whitelist.org_contract_tests (
    id          bigserial PRIMARY KEY,
    org         text NOT NULL REFERENCES whitelist.orgs (id),
    served      text[] NOT NULL,
    report_hash text NOT NULL,
    passed      boolean NOT NULL,
    report      jsonb NOT NULL,
    actor       text NOT NULL,
    run_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX org_contract_tests_org ON whitelist.org_contract_tests (org);

CREATE TABLE whitelist.org_certificates (
    id          bigserial PRIMARY KEY,
    org         text NOT NULL REFERENCES whitelist.orgs (id),
    served      text[] NOT NULL,
    report_hash text NOT NULL,
    signer      text NOT NULL,
    signing_id  text NOT NULL,
    signature   text NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX org_certificates_org ON whitelist.org_certificates (org);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        REVOKE UPDATE, DELETE ON whitelist.org_events, whitelist.org_contract_tests,
            whitelist.org_certificates FROM renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON whitelist.orgs, whitelist.org_roles, whitelist.org_serves,
            whitelist.org_certificates TO renkei_party;
    END IF;
END $$;
