-- renkei schema, version 40: the periods of tasks (事務) and info items (特定個人情報), and the
-- ordinance-level task (主務省令で定める事務) a linkage was asked under.
--
-- The catalog's data may give a task or an info item a period (valid_from, valid_to exclusive);
-- a row here sets it in the live registry, over the catalog's (NULL on both sides: always in
-- force). Outside its period nothing of the task or the item is permitted: a linkage is denied
-- with that reason. Each change is also a load of the source 'catalog-periods' in
-- whitelist.loads (who, when, what), followed by the review of every operating version.
CREATE TABLE whitelist.periods (
    kind       text NOT NULL CHECK (kind IN ('task', 'info')),
    id         text NOT NULL,
    valid_from date,
    valid_to   date,
    set_by     text NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id),
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to > valid_from)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON whitelist.periods TO renkei_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'renkei_party') THEN
        GRANT SELECT ON whitelist.periods TO renkei_party;
    END IF;
END $$;

-- A query may name the ordinance-level task (sub_task) under the flow's statutory task: the
-- hub's and the requester's records keep it beside the task (NULL: the statutory task only).
ALTER TABLE records.access_records ADD COLUMN sub_task text;
