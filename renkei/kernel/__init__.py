"""The kernel: settings, keys, the payload codec, the database, access records, pseudonyms,
search attributes, tokens and telemetry.

It is the bottom layer: it imports nothing of renkei above it (checked by import-linter in CI),
so every other layer may use it and none of its modules can reach into a flow, the whitelist or
the application.
"""
