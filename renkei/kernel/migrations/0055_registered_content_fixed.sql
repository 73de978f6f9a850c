-- renkei schema, version 55: a registered version's content is fixed.
--
-- A version is registered once, and its content (definition, source, content hash) is what its
-- approvals, reviews and runs' pins name. Whoever could write the table (the application's
-- role, an operator's session) could change it: a definition changed under its own hash is
-- caught where a process reads it (registry.pinned), but one changed together with its hash
-- would then run as if registered so. Every change of the content's columns, and every removal
-- of a version, is now refused, whichever role asks; only the lifecycle's columns (state, the
-- conformance report's hash) move.
CREATE FUNCTION registry.refuse_content_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'a registered BPF version is never removed (% v%)', OLD.bpf, OLD.version
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.bpf, NEW.version, NEW.content_hash, NEW.source_name, NEW.source_text,
        NEW.definition, NEW.author, NEW.loaded_at)
       IS DISTINCT FROM (OLD.bpf, OLD.version, OLD.content_hash, OLD.source_name,
        OLD.source_text, OLD.definition, OLD.author, OLD.loaded_at) THEN
        RAISE EXCEPTION 'the content of a registered BPF version is fixed (% v%):'
            ' a changed definition is registered as a new version', OLD.bpf, OLD.version
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER content_fixed BEFORE UPDATE OR DELETE ON registry.bpf_versions
    FOR EACH ROW EXECUTE FUNCTION registry.refuse_content_change();

CREATE FUNCTION registry.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registered BPF versions are never removed'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER no_truncate BEFORE TRUNCATE ON registry.bpf_versions
    FOR EACH STATEMENT EXECUTE FUNCTION registry.refuse_truncate();
