package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
)

// Config configures a Store. The zero value is valid.
type Config struct {
	// Now is the clock used for kv expiry; nil means time.Now.
	Now func() time.Time
	// BusyTimeout bounds how long an operation keeps retrying while the
	// database is locked by another connection (SQLITE_BUSY), on top of the
	// connection's own busy_timeout; <= 0 means 30 s. The context's
	// deadline, when sooner, wins.
	BusyTimeout time.Duration
	// EventRetention is how long raw usage events, and so their request
	// ids for de-duplication, are kept after they were appended (by Now).
	// Zero means DefaultEventRetention (48 h); a positive value below
	// MinEventRetention is raised to it; a negative value keeps them
	// forever. Hourly rollups are always kept.
	EventRetention time.Duration
}

// Store implements the storage ports on one *sql.DB. It is safe for
// concurrent use, and several Stores (in one process or many) may share one
// database file.
type Store struct {
	db    *sql.DB
	now   func() time.Time
	busy  time.Duration
	write chan struct{} // in-process write lock; a channel so waits honour ctx

	sweepEvery int          // kv writes between sweeps of expired keys
	kvWrites   atomic.Int64 // kv writes so far

	retention time.Duration // raw usage events; < 0 keeps them forever
	lastPrune atomic.Int64  // unix nanos of the last prune of raw events
	callers   callerCache   // usage_callers

	// Statements of the hot autocommit paths, prepared once: database/sql
	// keeps one prepared copy per pooled connection, so SQLite does not
	// parse them on every call.
	incrStmt, counterStmt *sql.Stmt
}

// New migrates db to the current schema and returns a Store over it. The
// Store does not own db: closing db is the caller's job.
func New(db *sql.DB) (*Store, error) { return NewWithConfig(db, Config{}) }

// NewWithConfig is New with a Config.
func NewWithConfig(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlite: New: nil *sql.DB")
	}
	s := &Store{db: db, now: cfg.Now, busy: cfg.BusyTimeout, write: make(chan struct{}, 1), sweepEvery: 4096}
	if s.now == nil {
		s.now = time.Now
	}
	if s.busy <= 0 {
		s.busy = 30 * time.Second
	}
	switch r := cfg.EventRetention; {
	case r == 0:
		s.retention = DefaultEventRetention
	case r > 0:
		s.retention = max(r, MinEventRetention)
	default:
		s.retention = -1
	}
	ctx := context.Background()
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	var err error
	if s.incrStmt, err = db.PrepareContext(ctx, incrSQL); err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.counterStmt, err = db.PrepareContext(ctx, selectCounterSQL); err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	return s, nil
}

// DB returns the handle the Store was built on.
func (s *Store) DB() *sql.DB { return s.db }

// querier is what a write transaction's statements run on.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// lockWrite takes the in-process write lock, or fails with ctx's error.
func (s *Store) lockWrite(ctx context.Context) error {
	select {
	case s.write <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) unlockWrite() { <-s.write }

// writeTx runs fn inside BEGIN IMMEDIATE ... COMMIT on one connection: the
// write lock is held from the first statement, so fn's reads and writes
// are atomic with respect to every other connection and process. fn's
// error rolls the transaction back and is returned as is.
func (s *Store) writeTx(ctx context.Context, fn func(q querier) error) error {
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()

	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: connection: %w", err)
	}
	healthy := false
	defer func() {
		if !healthy {
			// A connection whose transaction state is unknown must not go
			// back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()

	if err := s.retryBusy(ctx, func() error {
		_, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE")
		return err
	}); err != nil {
		healthy = true // BEGIN failed: no transaction is open
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := fn(conn); err != nil {
		if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr == nil {
			healthy = true
		}
		return err
	}
	// Once fn succeeded the commit is not cancelled half-way by ctx.
	commitCtx := context.WithoutCancel(ctx)
	if err := s.retryBusy(ctx, func() error {
		_, err := conn.ExecContext(commitCtx, "COMMIT")
		return err
	}); err != nil {
		if _, rbErr := conn.ExecContext(commitCtx, "ROLLBACK"); rbErr == nil {
			healthy = true
		}
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	healthy = true
	return nil
}

// execWrite runs one writing statement in autocommit mode (a single
// statement is atomic by itself) and returns the number of rows it changed.
func (s *Store) execWrite(ctx context.Context, query string, args ...any) (int64, error) {
	if err := s.lockWrite(ctx); err != nil {
		return 0, err
	}
	defer s.unlockWrite()
	var rows int64
	err := s.retryBusy(ctx, func() error {
		res, err := s.db.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		rows, err = res.RowsAffected()
		return err
	})
	return rows, err
}

// retryBusy runs fn until it succeeds, fails with something other than
// SQLITE_BUSY/SQLITE_LOCKED, ctx ends or the busy timeout passes.
func (s *Store) retryBusy(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(s.busy)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		if wait < 64*time.Millisecond {
			wait *= 2
		}
	}
}

// sqliteCoder is the extended result code accessor of modernc.org/sqlite's
// error type, matched structurally so the adapter need not import a driver.
type sqliteCoder interface{ Code() int }

const (
	codeBusy       = 5
	codeLocked     = 6
	codeConstraint = 19
)

func primaryCode(err error) int {
	var c sqliteCoder
	if errors.As(err, &c) {
		return c.Code() & 0xff
	}
	return -1
}

func isBusy(err error) bool {
	switch primaryCode(err) {
	case codeBusy, codeLocked:
		return true
	case -1:
		msg := err.Error()
		return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
	}
	return false
}

func isConstraint(err error) bool {
	if primaryCode(err) == codeConstraint {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
