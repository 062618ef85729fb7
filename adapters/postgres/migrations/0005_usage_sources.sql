-- 0005: usage events record the client's network and the verified payer
-- (metrics.UsageEvent.ClientNet, Payer), and rollups keep bounded caller
-- sets (metrics.CallerSet in its binary form) in the rollup row.
--
-- A NULL caller_set marks a rollup written before this migration: its
-- callers are still read from usage_rollup_callers, and its sources are its
-- callers (old events carry neither network nor payer). Append rewrites such
-- a row in the new form the next time it touches it and deletes its
-- usage_rollup_callers rows; new rollups never write there.
ALTER TABLE usage_events ADD COLUMN client_net text NOT NULL DEFAULT '';
ALTER TABLE usage_events ADD COLUMN payer text NOT NULL DEFAULT '';
ALTER TABLE usage_rollups ADD COLUMN caller_set bytea;
ALTER TABLE usage_rollups ADD COLUMN source_set bytea;
