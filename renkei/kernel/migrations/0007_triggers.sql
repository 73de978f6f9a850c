-- renkei schema, version 7: triggers and long-running flows.
--  * access records carry the trigger that started the flow (counter, portal, life-event, ...);
--  * reminders the flows ask to be sent before a deadline (an outbox for the executor);
--  * agency API tokens (the HTTP API), kept as hashes;
--  * change notifications published by providers: one row per (publisher, event id), so a
--    notification delivered twice is processed once.

ALTER TABLE records.access_records ADD COLUMN trigger text;

CREATE TABLE hub.reminders (
    id           bigserial PRIMARY KEY,
    workflow_id  text NOT NULL,
    step         text NOT NULL,
    executor     text NOT NULL,
    subject_code text NOT NULL,        -- the executor's code: it sends the reminder
    deadline     timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, step)
);

CREATE TABLE hub.agency_tokens (
    org        text PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE hub.notifications (
    publisher    text NOT NULL,
    event_id     text NOT NULL,
    event        text NOT NULL CHECK (event IN ('death', 'move', 'birth')),
    subject_id   uuid NOT NULL,
    occurred_on  date NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    started      jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (publisher, event_id)
);
