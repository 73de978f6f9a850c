-- renkei schema, version 17: the reminders are the executor's outbox, delivered at least once.
--
-- A wait step with `remind:` has the hub queue a row in hub.reminders; the executor reads its
-- own rows through the HTTP API (GET /api/outbox), the CLI (renkei outbox list) or the SDK
-- (renkei.app.outbox.deliver), and acknowledges each one. A row not acknowledged is listed again.
-- The table stays in the hub schema, which the per-party roles (version 14) cannot read: the web
-- process reads it as the application role and hands an org its own rows only.
ALTER TABLE hub.reminders ADD COLUMN deliveries integer NOT NULL DEFAULT 0;
ALTER TABLE hub.reminders ADD COLUMN delivered_at timestamptz;  -- first delivery
ALTER TABLE hub.reminders ADD COLUMN acked_at timestamptz;
CREATE INDEX reminders_unacknowledged ON hub.reminders (executor, id) WHERE acked_at IS NULL;
