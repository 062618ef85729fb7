-- Migration 2: the metrics event store (usage_events and its hourly
-- rollups). The tenant directory source uses the tenants table of
-- migration 1 as it is.
--
-- Times: usage_events.time_us and appended_us are Unix microseconds, UTC;
-- rollup hours are the Unix seconds of the UTC hour's start.

-- Raw usage events, one per request id. seq (the rowid) is the append order;
-- appended_us is the store's clock at append time and drives retention (see
-- Config.EventRetention): request ids are remembered as long as their event
-- row is kept. Countable and Billable are not stored: they derive from
-- lifecycle.
CREATE TABLE usage_events (
    seq         INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL UNIQUE,
    time_us     INTEGER NOT NULL,
    api_id      TEXT    NOT NULL,
    endpoint    TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    directory   TEXT    NOT NULL,
    caller_id   TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    latency_ms  INTEGER NOT NULL,
    price_usd   TEXT    NOT NULL,
    billed_usd  TEXT    NOT NULL,
    lifecycle   TEXT    NOT NULL,
    appended_us INTEGER NOT NULL
) STRICT;
-- Recent: ORDER BY time_us DESC, seq DESC walks this index backwards (the
-- rowid is the last column of every index entry).
CREATE INDEX usage_events_time ON usage_events (time_us);

-- Caller ids, numbered: rollups name callers by this id. Rows are never
-- deleted, so ids only grow.
CREATE TABLE usage_callers (
    id        INTEGER PRIMARY KEY,
    caller_id TEXT    NOT NULL UNIQUE
) STRICT;

-- One row per (hour, API): metrics.HourRollup. The primary key's order is
-- the order Rollups returns. Two packed columns, unsigned varints:
--   latency: the count of each latency bucket (metrics.LatencyBucket), in
--     bucket order; buckets are append-only, and a shorter blob (written
--     before buckets were added) reads as zeros for the missing ones.
--   callers: HourRollup.Callers as (usage_callers.id, calls) pairs, ids
--     ascending.
-- Packing callers in the row, rather than one row per (hour, API, caller),
-- is what keeps analytics fast: a week of traffic is one row per API-hour
-- to read, not one per API-hour-caller. Append rewrites the row inside its
-- write transaction.
CREATE TABLE usage_rollups (
    hour           INTEGER NOT NULL,
    api_id         TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    directory      TEXT    NOT NULL,
    events         INTEGER NOT NULL,
    calls          INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    revenue_micros INTEGER NOT NULL,
    latency        BLOB    NOT NULL,
    callers        BLOB    NOT NULL,
    PRIMARY KEY (hour, api_id)
) STRICT, WITHOUT ROWID;
