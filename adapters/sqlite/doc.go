// Package sqlite implements the dispatcher's storage ports on one SQLite
// database: the kv port (kv.Store and kv.BatchIncrementer) and the ledger
// port (ledger.Store). The metrics event store and the tenant directory
// source will follow on the same handle, in later migrations.
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
// processes on one file. Within a process, writers of one Store also queue
// on an in-process lock first, which avoids SQLite's sleeping busy handler.
//
// # Schema
//
// New applies the embedded, numbered migrations (migrations/NNNN_name.sql)
// in one transaction and records them in schema_migrations; running it
// again, from any number of processes, is harmless. A database whose schema
// is newer than this code is refused with [ErrSchemaTooNew]. Migration 1
// creates tenants, users, api_keys, ledger, audit_log and kv; triggers make
// ledger and audit_log refuse UPDATE and DELETE.
package sqlite
