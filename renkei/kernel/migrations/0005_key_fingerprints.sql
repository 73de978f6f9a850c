-- renkei schema, version 5: fingerprints of the hub's keys, so a process started with other keys
-- (another keys file, a fresh data folder) stops instead of deriving other codes.
CREATE TABLE hub.key_fingerprints (
    name        text PRIMARY KEY,       -- 'hub_key', 'signing_key'
    fingerprint text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now()
);
