-- renkei schema, version 27: issued invoices (docs/billing.md).
--
-- One row per org, month and revision: the invoice as computed from the signed records when it
-- was issued (its lines, the chain ranges it counts, a digest of the records read), the billing
-- model it was priced with, and the hash of its body. Issuing a month again adds a revision for
-- an org whose invoice changed; a stored invoice is never changed or deleted. `number` is the
-- invoice number, in the order invoices were issued.
CREATE SCHEMA IF NOT EXISTS billing;

CREATE TABLE billing.invoices (
    number     bigserial PRIMARY KEY,
    org        text NOT NULL,
    month      text NOT NULL CHECK (month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    revision   integer NOT NULL CHECK (revision > 0),
    body       jsonb NOT NULL,
    body_hash  text NOT NULL,            -- SHA-256 over the body's canonical JSON
    model      jsonb NOT NULL,           -- the billing model it was priced with
    issued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (org, month, revision)
);

CREATE FUNCTION billing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an issued invoice is never changed: issue a new revision'
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON billing.invoices
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT USAGE ON SCHEMA billing TO renkei_app;
        GRANT SELECT, INSERT ON billing.invoices TO renkei_app;
        GRANT USAGE, SELECT ON SEQUENCE billing.invoices_number_seq TO renkei_app;
    END IF;
END $$;
