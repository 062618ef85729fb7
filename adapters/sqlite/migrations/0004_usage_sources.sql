-- Migration 4: usage events record the client's network and the verified
-- payer (metrics.UsageEvent.ClientNet, Payer), and rollups keep bounded
-- caller sets (metrics.CallerSet in its binary form).
--
-- caller_set and source_set replace the packed callers column: a NULL
-- caller_set marks a row written before this migration, whose callers are
-- still read from the packed column (usage_callers ids) and whose sources
-- are its callers (old events carry neither network nor payer). Append
-- rewrites such a row in the new form the next time it touches it; new
-- rows leave callers empty and never add to usage_callers.
ALTER TABLE usage_events ADD COLUMN client_net TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_events ADD COLUMN payer TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_rollups ADD COLUMN caller_set BLOB;
ALTER TABLE usage_rollups ADD COLUMN source_set BLOB;
