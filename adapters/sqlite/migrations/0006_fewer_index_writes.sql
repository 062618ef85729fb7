-- 0006: fewer pages written per commit.
--
-- audit_log_tenant served no query (audit records are read by seq only),
-- and every group commit that appended a record wrote a page of it.
--
-- kv_exp served only the sweep of expired keys, and every write of a key
-- with a TTL moved its entry, one or two more pages per write (two of the
-- three pages of a paid request's counter increments, about a third of
-- the pages of a paid request). The sweep now visits the table in key
-- order a chunk at a time instead (Store.SweepExpired); reads already
-- treat an expired row as absent.
DROP INDEX audit_log_tenant;
DROP INDEX kv_exp;

-- Where the automatic sweep goes on in the kv table's key order (after
-- after, or from the first key when started is 0), kept so that a process
-- restarted often still walks the whole table over its lifetimes.
CREATE TABLE kv_sweep (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    started INTEGER NOT NULL,
    after   TEXT    NOT NULL
) STRICT;
