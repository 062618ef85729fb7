// Package postgres implements the dispatcher's storage ports on PostgreSQL
// through one *pgxpool.Pool, for deployments that run several gateway
// replicas. For now it implements the KV port ([kv.Store] and
// [kv.BatchIncrementer]); the ledger and audit store, the event store and the
// tenant source join the same [Store] (and its numbered migrations) later.
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
