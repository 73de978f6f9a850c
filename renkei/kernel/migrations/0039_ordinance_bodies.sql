-- renkei schema, version 39: a local government's own ordinance (独自利用事務, 番号法第9条第2項)
-- as a source of its own.
--
-- A source (and each of its rows) may belong to one body: the municipality whose ordinance it
-- is. Such a row permits that body's use of its own records only, never another body's, and
-- only that body loads the source; each load records which body it was made as.
ALTER TABLE whitelist.sources ADD COLUMN body text;
ALTER TABLE whitelist.rows ADD COLUMN body text;
ALTER TABLE whitelist.loads ADD COLUMN body text;
