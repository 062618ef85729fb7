-- 0007: the kv table keeps its rows in a rowid table, with the keys in an
-- index of their own.
--
-- A kv row was stored in the key's B-tree itself (WITHOUT ROWID). Its keys
-- are mostly random (idempotency keys, authorization ids), and its values
-- are a few hundred bytes (a replayed answer), so every new key landed on
-- a random leaf holding five or six rows: a page read, often a split, and
-- a page written per write, in a tree far larger than the page cache. Now
-- a new row goes to the end of the table, on the page the group's other
-- new rows share, and only its key (some 40 to a page) lands on a random
-- leaf of the much smaller index. A SetNX and a Set of a 600-byte value
-- cost about a third less CPU, and a paid request through the example
-- server about a tenth less (BENCHMARKS.md).
CREATE TABLE kv_v7 (
    id  INTEGER PRIMARY KEY,
    key TEXT    NOT NULL UNIQUE,
    v   BLOB,
    n   INTEGER,
    exp INTEGER
) STRICT;
INSERT INTO kv_v7 (key, v, n, exp) SELECT key, v, n, exp FROM kv ORDER BY key;
DROP TABLE kv;
ALTER TABLE kv_v7 RENAME TO kv;

-- The automatic sweep now walks the table in rowid order; its cursor is a
-- rowid (0: from the start).
DROP TABLE kv_sweep;
CREATE TABLE kv_sweep (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    after INTEGER NOT NULL
) STRICT;
