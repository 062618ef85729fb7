package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strconv"
	"sync"
	"time"
)

// appenderIdle is how long Append keeps its connection after a batch.
// Usage events arrive in batches every few tens of milliseconds under load
// (metrics.AsyncSink lingers 100 ms by default), so the connection and its
// prepared statements live on between them, and go back to the pool once
// the events stop.
const appenderIdle = time.Second

// appender is the connection usage-event batches are written on, with
// the statements of Append prepared on it once instead of parsed again
// for every batch (the multi-row INSERT is long to parse). Its mutex is
// held for the whole of an Append's transaction.
type appender struct {
	mu    sync.Mutex
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	used  time.Time // end of the last batch
	timer *time.Timer

	// The connection's own temp_store and wal_autocheckpoint, restored
	// when it goes back to the pool.
	tempStore, checkpoint int
}

// acquire locks the appender and returns its connection, taking one from
// db's pool if it has none.
func (a *appender) acquire(ctx context.Context, db *sql.DB) (*sql.Conn, error) {
	a.mu.Lock()
	if a.conn != nil {
		return a.conn, nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.conn = conn
	if err := a.setUp(ctx); err != nil {
		a.closeLocked(true)
		a.mu.Unlock()
		return nil, err
	}
	return conn, nil
}

// setUp sets the appender's connection up as the group committer sets up
// its own, while it holds it: statement journals in memory, and a
// checkpoint only past committerCheckpoint WAL pages (SQLite's default,
// 1000, would have every batch's commit checkpoint about four times as
// often, copying the same right-edge pages again each time, and would
// undo the committer's setting whenever this connection commits first).
func (a *appender) setUp(ctx context.Context) error {
	if err := a.conn.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&a.tempStore); err != nil {
		return err
	}
	if err := a.conn.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&a.checkpoint); err != nil {
		return err
	}
	_, err := a.conn.ExecContext(ctx, "PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = "+strconv.Itoa(committerCheckpoint))
	return err
}

// release unlocks the appender after a batch. A connection whose
// transaction state is unknown (bad) is dropped from the pool at once;
// otherwise it is kept, and given back to the pool after appenderIdle
// without a batch.
func (a *appender) release(bad bool) {
	defer a.mu.Unlock()
	if bad {
		a.closeLocked(true)
		return
	}
	a.used = time.Now()
	if a.timer == nil {
		a.timer = time.AfterFunc(appenderIdle, a.idle)
	} else {
		a.timer.Reset(appenderIdle)
	}
}

// idle gives the connection back to the pool once no batch has used it
// for appenderIdle.
func (a *appender) idle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return
	}
	if wait := appenderIdle - time.Since(a.used); wait > 0 {
		a.timer.Reset(wait) // a batch ran meanwhile
		return
	}
	a.closeLocked(false)
}

// closeLocked closes the statements and the connection, with its own
// settings back; bad keeps the connection from going back to the pool.
func (a *appender) closeLocked(bad bool) {
	for _, st := range a.stmts {
		_ = st.Close()
	}
	a.stmts = nil
	if a.conn == nil {
		return
	}
	if !bad {
		_, err := a.conn.ExecContext(context.Background(), "PRAGMA temp_store = "+strconv.Itoa(a.tempStore)+
			"; PRAGMA wal_autocheckpoint = "+strconv.Itoa(a.checkpoint))
		bad = err != nil
	}
	if bad {
		_ = a.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = a.conn.Close()
	a.conn = nil
}

// stmt returns query prepared on the appender's connection; the caller
// holds the appender.
func (a *appender) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := a.stmts[query]; ok {
		return st, nil
	}
	st, err := a.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if a.stmts == nil {
		a.stmts = make(map[string]*sql.Stmt, 12)
	}
	a.stmts[query] = st
	return st, nil
}
