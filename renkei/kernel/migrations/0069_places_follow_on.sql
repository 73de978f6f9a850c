-- renkei schema, version 69: a chain grows one place at a time.
--
-- A role that may set a chain's columns (the application's role holds the grant for every
-- keeper, for the all-in-one process's chainers) could link a keeper's waiting record at place
-- 2^63 - 1, or insert a record chained there, and the hub's role could append an outcome
-- there. `verify` reported it, but from then on every chainer and every writer of that chain
-- failed on the place after it, for good: one role stalled a chain it does not keep.
--
-- Now each place given must follow a place its chain has (the one before it is there, in the
-- chain or in the same statement), or be the first of a chain that has no other (so the
-- places the retention period emptied at a chain's start are not filled again). A link someone
-- sets out of turn at the chain's next place is still taken, and still reported by `verify`;
-- the chain goes on after it. Links are checked once per statement, on the rows it linked (a
-- chainer links thousands at once); records inserted chained as written, each after its
-- statement (a row-level check costs a record written unchained nothing, where a statement's
-- would copy every row it wrote).
--
-- Both read every chain whoever writes (an org's role sees only its own chain's records).
CREATE FUNCTION records.refuse_record_gap() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gap record;
BEGIN
    SELECT n.keeper, n.chain_seq INTO gap FROM new_places n
     WHERE (n.chain_seq > 1
            AND NOT EXISTS (SELECT 1 FROM records.access_records a
                             WHERE a.keeper = n.keeper AND a.chain_seq = n.chain_seq - 1))
        OR (n.chain_seq = 1
            AND EXISTS (SELECT 1 FROM records.access_records a
                         WHERE a.keeper = n.keeper AND a.chain_seq > 1
                           AND a.id NOT IN (SELECT id FROM new_places)))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'place % of %''s chain does not follow on from its places: a chain grows one place at a time',
            gap.chain_seq, gap.keeper USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER links_follow_on AFTER UPDATE ON records.access_records
    REFERENCING NEW TABLE AS new_places
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_record_gap();

-- A record inserted with its place (after its statement, so it sees the statement's other
-- rows): the places of its chain stored before this transaction are the chain it follows.
CREATE FUNCTION records.refuse_place_gap() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (NEW.chain_seq > 1
        AND NOT EXISTS (SELECT 1 FROM records.access_records a
                         WHERE a.keeper = NEW.keeper AND a.chain_seq = NEW.chain_seq - 1))
       OR (NEW.chain_seq = 1
           AND EXISTS (SELECT 1 FROM records.access_records a
                        WHERE a.keeper = NEW.keeper AND a.chain_seq > 1
                          AND coalesce(a.stored_at, '-infinity') < now()))
    THEN
        RAISE EXCEPTION 'place % of %''s chain does not follow on from its places: a chain grows one place at a time',
            NEW.chain_seq, NEW.keeper USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER places_follow_on AFTER INSERT ON records.access_records
    FOR EACH ROW WHEN (NEW.chain_seq IS NOT NULL)
    EXECUTE FUNCTION records.refuse_place_gap();

CREATE FUNCTION records.refuse_outcome_gap() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gap bigint;
BEGIN
    SELECT n.chain_seq INTO gap FROM new_places n
     WHERE n.chain_seq < 1
        OR (n.chain_seq > 1 AND NOT EXISTS (SELECT 1 FROM records.attempt_outcomes o
                                             WHERE o.chain_seq = n.chain_seq - 1))
        OR (n.chain_seq = 1 AND EXISTS (SELECT 1 FROM records.attempt_outcomes o
                                         WHERE o.chain_seq > 1
                                           AND o.id NOT IN (SELECT id FROM new_places)))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'place % of the outcomes'' chain does not follow on from its places: a chain grows one place at a time',
            gap USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER places_follow_on AFTER INSERT ON records.attempt_outcomes
    REFERENCING NEW TABLE AS new_places
    FOR EACH STATEMENT EXECUTE FUNCTION records.refuse_outcome_gap();
REVOKE ALL ON FUNCTION records.refuse_record_gap(), records.refuse_place_gap(),
    records.refuse_outcome_gap() FROM PUBLIC;
