// Package sqlite implements the dispatcher's storage ports on one SQLite
// database: the kv port (kv.Store and kv.BatchIncrementer), the ledger port
// (ledger.Store), the usage-event store (metrics.Store and
// metrics.RollupScanner) and the tenant directory source (tenant.Store).
//
// # The handle
//
// [New] takes a *sql.DB the caller opened; this package never imports a
// driver or parses a DSN. With the pure-Go driver modernc.org/sqlite
// (import _ "modernc.org/sqlite", driver name "sqlite") the recommended DSN
// is:
//
//	file:/var/lib/dispatcher/dispatcher.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate
//
// Each _pragma runs on every new connection; in turn:
//
//   - busy_timeout(10000): a connection waits up to 10 s for another
//     connection's (or process's) write lock instead of failing at once.
//     The adapter additionally retries SQLITE_BUSY itself (see
//     Config.BusyTimeout), so a missing busy_timeout costs latency, not
//     correctness.
//   - journal_mode(WAL): readers never block the writer nor the reverse.
//   - synchronous(NORMAL): with WAL, a commit survives a crash of the
//     process (it is tested by SIGKILLing writers); a power loss may lose
//     the last commits but never corrupts the file. Use synchronous(FULL)
//     when power-loss durability of every settlement matters more than
//     write throughput.
//   - foreign_keys(1): enforces the api_keys references.
//   - _txlock=immediate: the caller's own db.BeginTx transactions take the
//     write lock up front. The adapter does not depend on it: it issues
//     BEGIN IMMEDIATE itself on a dedicated connection.
//
// Use a file, not ":memory:": every pooled connection would get its own
// empty in-memory database.
//
// # Concurrency and exactness
//
// Every read-modify-write (an Incr, an IncrAll, a settlement with its audit
// record) runs in one BEGIN IMMEDIATE transaction, which holds SQLite's
// single write lock from its first statement: no other connection, in this
// process or another, can interleave. Counters are therefore exact and the
// audit chain is read at its tail and extended in the same transaction, so
// it never forks or gaps, across any number of *sql.DB handles and
// processes on one file. Within a process, durable writes of one Store (KV
// increments, Set, SetNX, Delete, settlements and audit records) are
// group-committed: one committer goroutine runs the writes queued at that
// moment in one immediate transaction and answers each caller only after
// COMMIT, so many concurrent writes share one transaction; a failed group
// is retried write by write, so one bad write fails only itself, and the
// audit chain's tail is carried in order inside the committer.
//
// GetEntry's check of a key not settled yet, on every paid request's
// path, runs on the committer's connection too, between groups and
// outside their transactions (it takes no write lock). Every commit
// empties the page cache of every other connection at its next
// transaction (SQLite cannot tell which pages another connection changed),
// so a read on a pooled connection under load reads the index's pages from
// the file again; the committer's connection made those commits, and keeps
// its cache. A caller whose context ends stops waiting for such a read at
// once; for a write, only while it is still queued (once taken, a write
// runs to its commit and its caller learns the outcome). The automatic
// sweep of expired kv rows is a write op of the groups.
//
// # Schema
//
// New applies the embedded, numbered migrations (migrations/NNNN_name.sql)
// in one transaction and records them in schema_migrations; running it
// again, from any number of processes, is harmless. A database whose schema
// is newer than this code is refused with [ErrSchemaTooNew]. Migration 1
// creates tenants, users, api_keys, ledger, audit_log and kv; triggers make
// ledger and audit_log refuse UPDATE and DELETE. Migration 2 creates
// usage_events, usage_callers and usage_rollups.
//
// # Counters
//
// Incr is one UPSERT (INSERT ... ON CONFLICT DO UPDATE ... RETURNING) that
// does kv.Increment's arithmetic in SQL, expired rows counting as absent,
// prepared once per connection. An increment that writes nothing (refused,
// or a read) is answered from a read that shows it still writes nothing,
// which is what an atomic Incr at that moment answers; IncrAll stays one
// immediate transaction. Increments marked kv.Increment.Volatile (rate-limit
// windows) live in an in-process tier and never reach the file: a crash
// forgets at most one window, and a mixed IncrAll stays all or none (the
// volatile part is restored exactly when the durable part refuses). Volatile
// counters are per process: run one gateway per SQLite file.
//
// # Usage events
//
// Append normalizes the batch, then in one immediate transaction inserts
// each event with ON CONFLICT (request_id) DO NOTHING and folds the ones
// inserted, as metrics.HourRollup.Add does, into their (hour, API) rollup
// rows: counters, a packed latency histogram, and the calls per caller
// packed in the row (callers numbered in usage_callers). Keeping callers in
// the rollup row rather than one row per (hour, API, caller) is what makes
// analytics cheap: window=week over 1,000,000 events (100 APIs, 5,000
// callers) reads 16,800 rows and answers in about 0.25 s on 2 vCPUs, where
// merely counting the 490,000 per-caller rows of the sketch in
// metrics.Store took 0.5-1 s. ScanRollups reads the caller names and the
// rollups in one read transaction, so a scan sees one snapshot.
//
// Batches are written 64 events per INSERT on a connection Append keeps
// between batches, its statements prepared once (it goes back to the pool
// after a second without a batch). What an event costs depends on its
// request id: the dispatcher's are time-ordered (UUIDv7) and insert at the
// end of the request-id index; random ids (a client's own X-Request-Id)
// dirty an index page each, several times the CPU per event.
//
// Raw events, and with them the request ids de-duplication uses, are kept
// for Config.EventRetention after they were appended (default and minimum
// 48 h; negative keeps them forever): Append prunes older ones about once a
// minute, in batches of 5,000, and PruneEvents does it on demand. At 100
// requests/s, 48 h is about 17 M rows, roughly 3 GB. Rollups are kept for
// all time; they grow with APIs x hours and distinct callers, not events.
// The Store caches each distinct caller id in memory for scans.
//
// # Tenants
//
// SaveTenants validates the set as tenant.NewDirectory does and replaces
// the tenants table in one immediate transaction (upserts, then deletes of
// the slugs not in the set); each row's doc is the tenant's JSON, which
// LoadTenants decodes back field for field.
package sqlite
