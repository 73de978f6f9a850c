-- renkei schema, version 11: a child flow's records name the flow it ran for.
--
-- A one-stop procedure calls other BPFs as child flows; their linkages serve the procedure the
-- citizen applied for. Each record of such a linkage keeps the top-level flow (id and BPF) and
-- its task, so the citizen's view and `records list --workflow` find them under that flow, and
-- an auditor sees the purpose the data served. Empty for a top-level flow's own linkages (and
-- left out of the record's hash then, so older records keep theirs).
ALTER TABLE records.access_records
    ADD COLUMN parent_workflow_id text,
    ADD COLUMN parent_bpf text,
    ADD COLUMN purpose_task text;
CREATE INDEX access_records_parent ON records.access_records (parent_workflow_id)
    WHERE parent_workflow_id IS NOT NULL;
