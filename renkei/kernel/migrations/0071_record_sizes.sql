-- renkei schema, version 71: a chained record's text is bounded, each column and the whole row.
--
-- Access records, attempt outcomes and checkpoints had no size bound. A role that may insert
-- them (an org's login, the application's role) could write a record of hundreds of megabytes:
-- each chainer, verifier and citizen's page that reads its chain would then hold it whole, about
-- a gigabyte of a chainer's memory for a 272 MB `reason`. Answer receipts are bounded since
-- migration 0053 (`receipt_sizes`); these now are too: each text column at most 8,192 bytes,
-- and all of a row's together at most 32,768, so a chainer's batch of 5,000 rows holds at most
-- 160 MB of text however it was written. What the platform writes is far within both: a
-- request's names are bounded where a party reads it (`renkei.contracts.messages`), a record's
-- reason is cut to 2,000 characters where it is made (`activities.attempts`).
--
-- The columns are read from the catalog here, so each text column of the three tables is bounded
-- (a test checks that a column added later is too). A row stored before this version is not
-- judged: a link gives an old record its place by an UPDATE, and a CHECK judges the whole row
-- again then, so an old record past the bound would stall its chain. `stored_at` is the
-- database's own clock, set by a trigger on every insert (migration 0026): no writer can date a
-- new row before this version. (Rows from before migration 0026 have none, and are not judged.)
-- The tables are locked before the clock is read: no row is stored between the moment the
-- constraint names and the constraint itself.
LOCK TABLE records.access_records, records.attempt_outcomes, records.checkpoints
    IN SHARE ROW EXCLUSIVE MODE;

DO $$
DECLARE
    t text;
    each_column text;
    all_columns text;
    since timestamptz := clock_timestamp();
BEGIN
    FOREACH t IN ARRAY ARRAY['access_records', 'attempt_outcomes', 'checkpoints'] LOOP
        SELECT string_agg(format('octet_length(%I)', attname), ', ' ORDER BY attnum),
               string_agg(format('coalesce(octet_length(%I), 0)', attname), ' + ' ORDER BY attnum)
          INTO each_column, all_columns
          FROM pg_catalog.pg_attribute
         WHERE attrelid = format('records.%I', t)::regclass
           AND attnum > 0 AND NOT attisdropped
           AND atttypid IN ('text'::regtype, 'character varying'::regtype);
        EXECUTE format(
            'ALTER TABLE records.%I ADD CONSTRAINT text_sizes CHECK (stored_at < %L'
            ' OR (greatest(%s) <= 8192 AND %s <= 32768)) NOT VALID',
            t, since, each_column, all_columns);
    END LOOP;
END $$;
