-- 0001: the KV port (rate limits, quotas, spend caps, idempotency keys).
--
-- One table holds both kinds of key. A counter (written by Incr) has its
-- value in n and value NULL; a value key (Set, SetNX) has its bytes in value
-- (never NULL, '' for an empty value) and n 0. A row whose expires_at has
-- passed is treated as absent by every query and removed by PurgeExpired or
-- overwritten by the next write.
--
-- Counters are updated in place many times a second, so the table leaves
-- room on each page (fillfactor) and has no index on expires_at: an index on
-- a column that Incr rewrites would rule out HOT updates. PurgeExpired scans.
CREATE TABLE kv (
    key        text COLLATE "C" PRIMARY KEY,
    n          bigint NOT NULL DEFAULT 0,
    value      bytea,
    expires_at timestamptz
) WITH (fillfactor = 70);
