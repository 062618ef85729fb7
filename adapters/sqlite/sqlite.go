package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	sweepChunk int          // kv rows one sweep after sweepEvery writes visits
	sweep      sweepCursor  // where the next of those sweeps starts
	kvWrites   atomic.Int64 // kv writes so far

	retention time.Duration // raw usage events; < 0 keeps them forever
	lastPrune atomic.Int64  // unix nanos of the last prune of raw events
	callers   callerCache   // usage_callers

	// Statements of the hot autocommit paths, prepared once: database/sql
	// keeps one prepared copy per pooled connection, so SQLite does not
	// parse them on every call.
	counterStmt, entryStmt *sql.Stmt

	queue    groupQueue // durable writes waiting for their group commit
	volatile volatileTier
}

// New migrates db to the current schema and returns a Store over it. The
// Store does not own db: closing db is the caller's job.
func New(db *sql.DB) (*Store, error) { return NewWithConfig(db, Config{}) }

// NewWithConfig is New with a Config.
func NewWithConfig(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlite: New: nil *sql.DB")
	}
	s := &Store{db: db, now: cfg.Now, busy: cfg.BusyTimeout, write: make(chan struct{}, 1), sweepEvery: 2048, sweepChunk: 4096}
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
	if s.counterStmt, err = db.PrepareContext(ctx, selectCounterSQL); err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.entryStmt, err = db.PrepareContext(ctx, getEntrySQL); err != nil {
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
	return s.inTx(ctx, func(conn *sql.Conn) error { return fn(conn) })
}

// inTx runs fn inside BEGIN IMMEDIATE ... COMMIT on one pooled
// connection; the caller holds the in-process write lock.
func (s *Store) inTx(ctx context.Context, fn func(conn *sql.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: connection: %w", err)
	}
	healthy, err := s.txOn(ctx, conn, fn)
	if !healthy {
		// A connection whose transaction state is unknown must not go
		// back to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = conn.Close()
	return err
}

// txOn runs fn inside BEGIN IMMEDIATE ... COMMIT on conn and reports
// whether conn is left outside any transaction (healthy).
func (s *Store) txOn(ctx context.Context, conn *sql.Conn, fn func(conn *sql.Conn) error) (healthy bool, err error) {
	if err := s.retryBusy(ctx, func() error {
		_, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE")
		return err
	}); err != nil {
		return true, fmt.Errorf("sqlite: begin: %w", err) // no transaction is open
	}
	if err := fn(conn); err != nil {
		_, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return rbErr == nil, err
	}
	// Once fn succeeded the commit is not cancelled half-way by ctx.
	commitCtx := context.WithoutCancel(ctx)
	if err := s.retryBusy(ctx, func() error {
		_, err := conn.ExecContext(commitCtx, "COMMIT")
		return err
	}); err != nil {
		_, rbErr := conn.ExecContext(commitCtx, "ROLLBACK")
		return rbErr == nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	return true, nil
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
	codeBusy   = 5
	codeLocked = 6
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

// Group commit.
//
// Durable kv writes (Incr, IncrAll, Set, SetNX), ledger appends, usage-event
// batches and the kv sweep's steps do not each take SQLite's write lock and
// commit on their own: they queue as ops, and one goroutine at a time (the
// committer) takes every op queued so far, up to maxGroup, runs them in
// order in one BEGIN IMMEDIATE transaction and commits once. Each caller is answered only after that COMMIT, so an
// answered write is as durable as an autocommitted one (with WAL and
// synchronous(NORMAL), it survives a SIGKILL of the process), while the
// cost of a transaction, the write lock and the WAL frames of hot pages are
// shared by the whole group. Under concurrency this is what turns a few
// thousand commits a second into tens of thousands of writes.
//
// An op is a function of the open transaction that computes its own answer
// (a refusal or a duplicate is an answer, not an error) and returns an
// error only when a statement failed. If any op of a group fails, or the
// COMMIT does, the group is rolled back and each of its ops is run again
// alone in its own transaction, so one bad op cannot fail the others and
// no op is applied twice. A group whose transaction never begins (another
// process holds the write lock past the busy timeout) answers all its ops
// with that error. An op whose context ends while it is queued is taken
// out of the queue and never applied, and its caller gets the context's
// error at once; once taken, a write runs to its commit whatever happens
// to the caller's context, and its caller waits to learn how it ended.
// Reads (groupRead) run between groups, outside their transactions; their
// callers may leave as soon as their context ends.
//
// Ops that queue while a group's statements run join that same
// transaction before its COMMIT (up to maxGroup), so groups grow with the
// load without any waiting. The committer is one goroutine, started by the
// first write and ended after a second without any; while it lives it keeps
// one connection of the pool, with the group's statements (BEGIN and
// COMMIT included) prepared on it, from group to group, and gives it back
// when it ends, so an idle Store holds neither.

// maxGroup caps the ops of one transaction, bounding the latency a group
// adds to the ops queued behind it.
const maxGroup = 1024

// groupOp is one queued write.
type groupOp struct {
	ctx context.Context
	// fn runs the op alone; for a ledger op (led set) the committer
	// instead appends it with the group's other ledger ops in a few
	// multi-row statements, and uses fn only when the op has to run alone.
	fn  func(g *groupTx) error
	led *ledgerOp
	// read marks an op that only reads: it runs on the committer's
	// connection outside any write transaction, takes no write lock, and
	// its caller may stop waiting for it when its context ends.
	read bool
	err  error
	done chan struct{}
}

// groupQueue is the Store's queue of ops waiting for the committer.
type groupQueue struct {
	mu      sync.Mutex
	ops     []*groupOp
	running bool          // the committer goroutine is alive
	idle    bool          // it waits on wake for ops
	wake    chan struct{} // buffered: wakes the idle committer

	// tx is the committer's connection with its prepared statements,
	// kept from group to group (only the committer, which holds the
	// in-process write lock, touches it).
	tx *groupTx
}

// take removes and returns up to n queued ops.
func (q *groupQueue) take(n int) []*groupOp {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(len(q.ops), n)
	if n == 0 {
		return nil
	}
	ops := make([]*groupOp, n)
	copy(ops, q.ops)
	rest := copy(q.ops, q.ops[n:])
	clear(q.ops[rest:])
	q.ops = q.ops[:rest]
	return ops
}

// remove takes op out of the queue if the committer has not taken it
// yet, and reports whether it did.
func (q *groupQueue) remove(op *groupOp) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.ops, op)
	if i < 0 {
		return false
	}
	q.ops = slices.Delete(q.ops, i, i+1)
	return true
}

// groupTx is the committer's connection, on which each group's
// transaction runs, with what its ops share: statements prepared once per
// connection and, within one transaction, the audit chain's tail.
type groupTx struct {
	ctx   context.Context
	conn  *sql.Conn
	stmts map[string]*sql.Stmt

	tailRead bool
	tailSeq  int64
	tailHash string

	// Buffers of the ledger's multi-row statements, reused from group to
	// group.
	// The connection's own temp_store and wal_autocheckpoint, restored
	// by close.
	tempStore, checkpoint int

	ledgerOps []*ledgerOp
	args      []any
	seen      map[entryKey]struct{}
}

// stmt returns query prepared on the committer's connection.
func (g *groupTx) stmt(query string) (*sql.Stmt, error) {
	if st, ok := g.stmts[query]; ok {
		return st, nil
	}
	st, err := g.conn.PrepareContext(g.ctx, query)
	if err != nil {
		return nil, err
	}
	if g.stmts == nil {
		g.stmts = make(map[string]*sql.Stmt, 8)
	}
	g.stmts[query] = st
	return st, nil
}

// exec runs query, prepared on the committer's connection, with args.
func (g *groupTx) exec(query string, args ...any) (sql.Result, error) {
	st, err := g.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(g.ctx, args...)
}

// committerCheckpoint is the WAL size, in pages, past which the
// committer's commits checkpoint the WAL into the database file (SQLite's
// default is 1000). The pages a group writes are mostly the same hot ones
// (counters, the right edges of the ledger and audit log): a checkpoint
// copies each page once however often the WAL holds it, so checkpointing
// less often copies fewer pages per write. At 4 KiB pages the WAL file
// grows to about 130 MiB and stays that size (SQLite reuses it from the
// start after a checkpoint). 32768 against 8192, same run: 6% less CPU
// per paid request and 8% more paid throughput; 65536 gained nothing
// more. The price: a checkpoint runs inside a commit, so when one comes
// every write waits for it longer (the slowest settlement append, 44 ms
// at 8192, was 118-139 ms at 32768 in one test; the 99.9th percentile of
// a kv Set fell from ~25 ms to 2-4 ms). Opening a database after a crash
// replays the WAL, which reads the whole file.
const committerCheckpoint = 32768

// setUp sets the committer's connection up for its groups while it holds
// it; close gives the connection's own settings back:
//   - temp_store MEMORY keeps statement journals in memory. A statement of a
//     group that may fail half-way (a multi-row INSERT, one with triggers)
//     journals the pages it changes so that SQLite can undo it alone,
//     without the group's other writes; by default that journal spills to
//     a temporary file past 64 KiB, a write system call per page.
//   - wal_autocheckpoint committerCheckpoint (see there).
func (g *groupTx) setUp() error {
	if err := g.conn.QueryRowContext(g.ctx, "PRAGMA temp_store").Scan(&g.tempStore); err != nil {
		return err
	}
	if err := g.conn.QueryRowContext(g.ctx, "PRAGMA wal_autocheckpoint").Scan(&g.checkpoint); err != nil {
		return err
	}
	_, err := g.conn.ExecContext(g.ctx, "PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = "+strconv.Itoa(committerCheckpoint))
	return err
}

// close releases the statements and the connection; bad says its
// transaction state is unknown, so it must not go back to the pool.
func (g *groupTx) close(bad bool) {
	for _, st := range g.stmts {
		_ = st.Close()
	}
	g.stmts = nil
	if !bad {
		_, err := g.conn.ExecContext(g.ctx, "PRAGMA temp_store = "+strconv.Itoa(g.tempStore)+
			"; PRAGMA wal_autocheckpoint = "+strconv.Itoa(g.checkpoint))
		bad = err != nil
	}
	if bad {
		_ = g.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = g.conn.Close()
}

var opDonePool = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// group runs fn in a group-committed transaction and returns once that
// transaction committed (fn's error, the commit's error, or nil).
func (s *Store) group(ctx context.Context, fn func(g *groupTx) error) error {
	return s.enqueue(&groupOp{ctx: ctx, fn: fn})
}

// groupRead runs fn, which only reads, on the committer's connection, in
// turn with the groups but outside their transactions: it sees what was
// committed when it runs, and waits for no write lock.
func (s *Store) groupRead(ctx context.Context, fn func(g *groupTx) error) error {
	return s.enqueue(&groupOp{ctx: ctx, fn: fn, read: true})
}

// enqueue queues op and returns once its group committed.
func (s *Store) enqueue(op *groupOp) error {
	if err := op.ctx.Err(); err != nil {
		return err
	}
	op.done = opDonePool.Get().(chan struct{})
	q := &s.queue
	q.mu.Lock()
	q.ops = append(q.ops, op)
	switch {
	case !q.running:
		q.running = true
		if q.wake == nil {
			q.wake = make(chan struct{}, 1)
		}
		go s.committer()
	case q.idle:
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	select {
	case <-op.done:
		opDonePool.Put(op.done)
		return op.err
	case <-op.ctx.Done():
	}
	// The caller gives up. An op still queued is never taken: nothing will
	// answer it. A read already taken has no effect to wait for (its
	// answer goes to a buffered channel nobody reads). A write already
	// taken runs to its commit, and its caller learns how it ended.
	if q.remove(op) {
		opDonePool.Put(op.done)
		return op.ctx.Err()
	}
	if op.read {
		return op.ctx.Err()
	}
	<-op.done
	opDonePool.Put(op.done)
	return op.err
}

// committerIdle is how long the committer goroutine waits for new ops
// before it exits; under steady load it lives on, and keeps the deep stack
// SQLite's code needs instead of growing a fresh goroutine's every time.
const committerIdle = time.Second

// committer commits groups until the queue has stayed empty for
// committerIdle.
func (s *Store) committer() {
	q := &s.queue
	idle := time.NewTimer(committerIdle)
	defer idle.Stop()
	for {
		// Let the callers the last commit answered run first: most of
		// them queue their next write at once (a paid request makes
		// several in a row), and it joins this group instead of waiting
		// for a commit of its own. On two cores this one yield cut the
		// commits, so the CPU, per paid request by a fifth.
		runtime.Gosched()
		if ops := q.take(maxGroup); len(ops) > 0 {
			s.commitGroup(ops)
			continue
		}
		q.mu.Lock()
		if len(q.ops) > 0 {
			q.mu.Unlock()
			continue
		}
		q.idle = true
		q.mu.Unlock()
		idle.Reset(committerIdle)
		select {
		case <-q.wake:
		case <-idle.C:
		}
		q.mu.Lock()
		q.idle = false
		if len(q.ops) == 0 {
			// Idle: give the connection back to the pool (the next
			// committer takes one again), so that an idle Store holds
			// neither a goroutine nor a connection.
			if q.tx != nil {
				q.tx.close(false)
				q.tx = nil
			}
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
	}
}

// commitGroup runs ops, and the ops queued while they run (up to
// maxGroup), in one transaction, or each alone when that fails, and
// answers every one of them. The reads among the ops taken first run
// before the transaction, outside it, and are answered at once.
func (s *Store) commitGroup(ops []*groupOp) {
	_ = s.lockWrite(context.Background())
	ran := s.admit(make([]*groupOp, 0, len(ops)), ops)
	ran = s.runReads(ran)
	if len(ran) == 0 {
		s.unlockWrite()
		return
	}
	began, err := s.runGroup(func(g *groupTx) error {
		// Ledger ops are gathered and appended together at the end: every
		// op of a group was pending at the same time (each caller waits
		// for the commit), so any order among them is a valid one, and
		// the chain is extended in queue order among the ledger ops.
		led := g.ledgerOps[:0]
		defer func() { clear(led); g.ledgerOps = led[:0] }()
		for start := 0; start < len(ran); {
			// On a failure, every op in ran (those not run yet included)
			// is run again alone below.
			for _, op := range ran[start:] {
				if op.led != nil {
					led = append(led, op.led)
					continue
				}
				if err := op.fn(g); err != nil {
					return err
				}
			}
			start = len(ran)
			// Ops that queued while these ran join the same commit.
			ran = s.admit(ran, s.queue.take(maxGroup-len(ran)))
		}
		if len(led) > 0 {
			return g.appendLedger(led)
		}
		return nil
	})
	if err != nil && began && len(ran) > 1 {
		for _, op := range ran {
			if op.read {
				op.err = s.runRead(op)
			} else {
				_, op.err = s.runGroup(op.fn)
			}
		}
	} else {
		// Every op taken is answered, those of a transaction that never
		// began (the write lock or the connection was not had) included.
		for _, op := range ran {
			op.err = err
		}
	}
	s.unlockWrite()
	for _, op := range ran {
		op.done <- struct{}{}
	}
}

// admit appends to ran the ops whose callers still wait, and answers the
// others with their context's error: never applied.
func (s *Store) admit(ran, ops []*groupOp) []*groupOp {
	for _, op := range ops {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			op.done <- struct{}{}
			continue
		}
		ran = append(ran, op)
	}
	return ran
}

// runReads runs and answers the reads of ops and returns the other ops.
func (s *Store) runReads(ops []*groupOp) []*groupOp {
	rest := ops[:0]
	for _, op := range ops {
		if !op.read {
			rest = append(rest, op)
			continue
		}
		op.err = s.runRead(op)
		op.done <- struct{}{}
	}
	clear(ops[len(rest):])
	return rest
}

// runRead runs a read op on the committer's connection, in autocommit
// mode; the caller holds the in-process write lock.
func (s *Store) runRead(op *groupOp) error {
	g, err := s.groupConn()
	if err != nil {
		return err
	}
	return s.retryBusy(context.Background(), func() error { return op.fn(g) })
}

// groupConn returns the committer's connection, taking one from the pool
// and setting it up if it has none; the caller holds the in-process write
// lock.
func (s *Store) groupConn() (*groupTx, error) {
	q := &s.queue
	if q.tx != nil {
		return q.tx, nil
	}
	conn, err := s.db.Conn(context.Background())
	if err != nil {
		return nil, fmt.Errorf("sqlite: connection: %w", err)
	}
	g := &groupTx{ctx: context.Background(), conn: conn}
	if err := g.setUp(); err != nil {
		g.close(true)
		return nil, fmt.Errorf("sqlite: connection: %w", err)
	}
	q.tx = g
	return g, nil
}

// runGroup runs fn in one immediate transaction on the committer's
// connection and commits it; the caller holds the in-process write lock.
// began reports that the transaction began (fn ran); when it did not, the
// error is the connection's or BEGIN's. BEGIN IMMEDIATE, COMMIT and
// ROLLBACK are prepared once, like the ops' statements.
func (s *Store) runGroup(fn func(g *groupTx) error) (began bool, err error) {
	ctx := context.Background() // taken ops run to their commit
	g, err := s.groupConn()
	if err != nil {
		return false, err
	}
	g.tailRead = false
	exec := func(query string) error {
		_, err := g.exec(query)
		return err
	}
	if err := s.retryBusy(ctx, func() error { return exec("BEGIN IMMEDIATE") }); err != nil {
		return false, fmt.Errorf("sqlite: begin: %w", err) // no transaction is open
	}
	healthy, err := func() (bool, error) {
		if err := fn(g); err != nil {
			return exec("ROLLBACK") == nil, err
		}
		if err := s.retryBusy(ctx, func() error { return exec("COMMIT") }); err != nil {
			return exec("ROLLBACK") == nil, fmt.Errorf("sqlite: commit: %w", err)
		}
		return true, nil
	}()
	if !healthy {
		g.close(true)
		s.queue.tx = nil
	}
	return true, err
}
