// Package postgres implements the dispatcher's storage ports on PostgreSQL
// through one *pgxpool.Pool, for deployments that run several gateway
// replicas. One [Store] implements every storage port: the KV port
// ([kv.Store] and [kv.BatchIncrementer]), the settlement ledger and audit
// log ([ledger.Store]), usage events and hourly rollups ([metrics.Store] and
// [metrics.RollupScanner]) and the tenant directory ([tenant.Store]).
//
// The adapter takes a pool the caller built and never parses a DSN. All of
// its objects live in one schema (Config.Schema, "public" by default), so
// several deployments, or parallel tests, can share a database.
//
// # Migrations
//
// [New] applies the embedded, numbered migrations (migrations/NNNN_name.sql)
// that the schema's schema_migrations table does not list yet, in one
// transaction under an advisory lock, so replicas that start together migrate
// once. Running New again is a no-op. A schema migrated by a newer build (a
// version this build does not know) is refused with [ErrSchemaTooNew] rather
// than used.
//
// # Ledger and audit chain
//
// Migration 0002 creates tenants, users, api_keys, ledger and audit_log.
// Triggers refuse UPDATE, DELETE and TRUNCATE of ledger and audit_log
// (SQLSTATE 2F003, see [IsAppendOnlyViolation]) and any audit record that is
// not the successor of the chain's tail. Entries are unique per (tenant,
// idempotency key); audit data is bytea, kept byte for byte; times are
// timestamptz (microseconds).
//
// Appends to the audit chain are serialised across every replica by a
// transaction-scoped advisory lock (pg_advisory_xact_lock) taken before the
// tail is read; the record is sealed in that transaction (by the server,
// with the encoding of [ledger.HashRecord], and checked again with
// [ledger.Seal] after the commit) and the lock is released only once the
// commit is visible, so the chain never forks or gaps. Because that makes the
// chain's throughput one commit at a time, a Store groups the appends that
// arrive while a write is in flight and writes them in one transaction (one
// round trip per group, the lock held only while the server seals and
// inserts the group's audit records: the entries are inserted before it is
// taken; see chain.go): concurrent settlements share one WAL flush.
//
// # Usage events
//
// Append inserts events with ON CONFLICT (request_id) DO NOTHING and, in the
// same transaction, adds the ones actually inserted to usage_rollups (per API
// and UTC hour) and usage_rollup_callers (per API, hour and caller), taking
// row locks in a fixed order so concurrent appends cannot deadlock. Raw
// events are kept until [Store.PurgeUsageEvents] removes them.
//
// # Tenants
//
// Each tenant is stored as its JSON (tenant.Tenant's encoding) in directory
// order; LoadTenants parses them back with tenant.ParseDirectory and
// SaveTenants replaces them all in one transaction, serialised by an
// advisory lock.
//
// # KV semantics
//
// Incr is a single INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING
// statement: PostgreSQL locks the row (or inserts it) and evaluates the
// admission rule against its latest committed version, so limits are exact
// across any number of replicas and pools. Arithmetic is done in numeric, so
// an increment that would pass math.MaxInt64 is refused rather than
// overflowing. A refused increment writes nothing; the value it returns is the
// counter as of the statement's start.
//
// IncrAll runs the same statement for each key in one transaction, in sorted
// key order, so concurrent batches take their row locks in one global order
// and cannot deadlock; if any increment is refused the transaction is rolled
// back and the current values are returned. It costs two round trips
// (BEGIN and the statements pipelined in one, then COMMIT or ROLLBACK).
//
// Each Incr commits on its own, so with synchronous_commit on (the default)
// its latency is the server's WAL flush time, typically a few milliseconds,
// while concurrent increments share flushes (group commit). A deployment that
// prefers lower latency for counters over keeping the last few milliseconds
// of increments through a database crash can set synchronous_commit=off on
// the pool it passes in (pgxpool.Config.ConnConfig.RuntimeParams, or
// "?synchronous_commit=off" in the connection string); admission stays exact
// either way.
//
// Expiry uses the database server's clock (now()), with microsecond
// precision. Expired rows are treated as absent at once and deleted lazily:
// by the next write to the same key, or by [Store.PurgeExpired], which the
// application calls now and then (no goroutine runs in the background).
package postgres
