-- 0003: usage events and their hourly rollups (metrics.Store).
--
-- usage_events is the raw event log, de-duplicated on request_id. Amounts
-- are integer micro-USD (events carry at most six decimals). Within one
-- Append call, batch is the same and ord is the event's index, so "append
-- order" is (batch, ord).
CREATE SEQUENCE usage_batch;
CREATE TABLE usage_events (
    request_id    text COLLATE "C" PRIMARY KEY,
    batch         bigint NOT NULL,
    ord           integer NOT NULL,
    time          timestamptz NOT NULL,
    api_id        text COLLATE "C" NOT NULL,
    endpoint      text NOT NULL,
    owner         text NOT NULL,
    directory     text NOT NULL,
    caller_id     text NOT NULL,
    status        integer NOT NULL,
    latency_ms    bigint NOT NULL,
    price_micros  bigint NOT NULL,
    billed_micros bigint NOT NULL,
    lifecycle     text NOT NULL,
    billable      boolean NOT NULL,
    countable     boolean NOT NULL
);
CREATE INDEX usage_events_recent ON usage_events (time DESC, batch DESC, ord DESC);

-- One row per API per UTC hour, updated in the transaction that inserts the
-- events. latency holds the counts of metrics.LatencyHistogram's buckets
-- (append-only bucket bounds, so a longer array only ever grows at the end).
CREATE TABLE usage_rollups (
    hour           timestamptz NOT NULL,
    api_id         text COLLATE "C" NOT NULL,
    owner          text NOT NULL,
    directory      text NOT NULL,
    events         bigint NOT NULL,
    calls          bigint NOT NULL,
    errors         bigint NOT NULL,
    revenue_micros bigint NOT NULL,
    latency        bigint[] NOT NULL,
    PRIMARY KEY (hour, api_id)
);

CREATE TABLE usage_rollup_callers (
    hour      timestamptz NOT NULL,
    api_id    text COLLATE "C" NOT NULL,
    caller_id text COLLATE "C" NOT NULL,
    calls     bigint NOT NULL,
    PRIMARY KEY (hour, api_id, caller_id)
);
