// Package memory implements every port of the dispatcher in memory: the KV
// store, the ledger store and the event store. The implementations are real,
// concurrency-safe and exact (they pass the same conformance suites as the
// SQL and Redis adapters), so tenant logic can be unit-tested against them
// with no services running, and a single-process gateway can run on them.
// Nothing survives a restart.
package memory
