-- renkei schema, version 8: the life-event schedules renkei manages, per Temporal namespace.
-- Temporal's schedule listing is eventually consistent: a schedule created or deleted a moment
-- ago may be missing from it or still in it. `renkei schedules sync` keeps its own list here, so
-- it never creates one twice nor leaves one behind.

CREATE TABLE hub.schedules (
    namespace   text NOT NULL,
    schedule_id text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, schedule_id)
);
