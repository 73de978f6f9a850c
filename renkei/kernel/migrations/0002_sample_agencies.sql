-- Sample agencies' own data. Each org keeps its tables in its own schema and knows residents only
-- by its own agency-specific code.

CREATE SCHEMA IF NOT EXISTS agency_city_minato;
CREATE SCHEMA IF NOT EXISTS agency_city_shibuya;
CREATE SCHEMA IF NOT EXISTS agency_kyokai_kenpo;
CREATE SCHEMA IF NOT EXISTS agency_jps;

CREATE TABLE agency_city_minato.residents (
    code text PRIMARY KEY, household_id text NOT NULL, relationship text NOT NULL,
    moved_in date NOT NULL, birth_date date NOT NULL
);
CREATE TABLE agency_city_minato.local_tax (
    code text NOT NULL, fiscal_year integer NOT NULL, taxable_income bigint NOT NULL,
    municipal_tax bigint NOT NULL, dependents integer NOT NULL, PRIMARY KEY (code, fiscal_year)
);
CREATE TABLE agency_city_shibuya.residents (LIKE agency_city_minato.residents INCLUDING ALL);
CREATE TABLE agency_city_shibuya.local_tax (LIKE agency_city_minato.local_tax INCLUDING ALL);

CREATE TABLE agency_kyokai_kenpo.insured (code text PRIMARY KEY);
CREATE TABLE agency_kyokai_kenpo.medical_payments (
    code text NOT NULL REFERENCES agency_kyokai_kenpo.insured, month text NOT NULL,
    amount bigint NOT NULL, kind text NOT NULL
);
CREATE INDEX medical_payments_code ON agency_kyokai_kenpo.medical_payments (code);

CREATE TABLE agency_jps.pensions (
    code text PRIMARY KEY, kind text NOT NULL, annual_amount bigint NOT NULL
);
CREATE TABLE agency_jps.insured (code text PRIMARY KEY);
