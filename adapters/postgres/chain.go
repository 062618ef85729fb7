package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/402claw/dispatcher/ledger"
)

// The audit chain is a single sequence: appending record n+1 needs record
// n's hash, so appends are serialised by one transaction-scoped advisory
// lock per schema, taken before the tail is read and held until the commit
// is visible, on every replica. Done one append per transaction, the chain's
// throughput would be one commit (one WAL flush) at a time, whatever the
// number of replicas. So each Store groups the appends that arrive while a
// write is in progress and writes them together, in one transaction and
// one round trip:
//
//	BEGIN;
//	INSERT the entries, skipping (tenant, key)s already stored
//	    (ledgerQueries.insertEntries), before the lock: the entries need
//	    no order of their own, so their rows and index entries are written
//	    while another group may hold the lock;
//	pg_advisory_xact_lock(chain);
//	one statement (ledgerQueries.appendChain): seal each record whose
//	    entry this transaction inserted (or that has none) against the
//	    running tail (sha256 in the server, the encoding of
//	    ledger.HashRecord) and INSERT them in seq order;
//	COMMIT
//
// The server runs all of it without waiting for the client, so the lock's
// holder never waits on a round trip, or on the client process being
// scheduled, while it holds the lock: an earlier version read the tail in a
// first round trip, sealed in Go and wrote in a second, and two replicas
// then spent their time waiting for each other's round trips (the lock was
// held 94-98% of a run). Each record's seal is computed again in Go after
// the commit and must match the server's.
//
// The lock is held only while the rows are written, not while the commit
// is flushed to disk: the group's transaction commits with
// synchronous_commit off (SET LOCAL), which makes its rows visible and
// releases the lock as soon as the commit record is written, and then the
// writer waits for durability outside the lock with a one-statement
// transaction of its own (pg_current_xact_id() gives it an xid, so its
// commit flushes the WAL up to itself, and so past the group's commit).
// Callers are answered only after that flush, so an answered settlement is
// as durable as with a synchronous commit (to the level the session's own
// synchronous_commit asks for). The WAL is flushed in order, so a crash
// loses at most a suffix of the chain that no caller was told about, never
// a record in the middle. Without this the lock would be held across each
// group's fsync, and a second replica could only wait for it: the chain's
// rate is then one fsync at a time, whatever the number of replicas. With
// it, flushes of different replicas' groups overlap and PostgreSQL merges
// them, and the lock turns over at the speed of the writes.
//
// The caller whose append opens a group writes it (no background
// goroutine); appends that arrive meanwhile queue, and the first of them
// writes the next group. Every append still gets its own answer: its sealed
// record, ErrDuplicate, or the group's error. If the server refuses a group
// (a constraint, not a lost connection), each of its appends is retried
// alone, so one bad append cannot fail others.

// maxGroup bounds the appends written in one transaction.
const maxGroup = 256

// flushTimeout bounds the write of one group. A group is written on behalf
// of several callers, so it does not stop when the writing caller's context
// is cancelled; callers that give up stop waiting for their answer.
const flushTimeout = 15 * time.Second

type appendReq struct {
	entry *ledger.Entry // nil for an audit record alone
	rec   ledger.AuditRecord
	ctx   context.Context
	done  chan appendResult // buffered: the writer never blocks on it
	lead  chan struct{}     // closed when this caller must write the queue
	led   bool              // lead was closed (under chainWriter.mu)
}

type appendResult struct {
	rec ledger.AuditRecord
	err error
}

type chainWriter struct {
	mu      sync.Mutex
	queue   []*appendReq
	writing bool

	// What this Store's groups cost the chain, for the benchmarks: groups
	// and appends written, and how long the lock was held, by the server's
	// clock, from taking it to the COMMIT.
	groups, appends, heldNanos atomic.Int64
}

// appendChain appends one record (with its entry, when e is not nil) and
// returns it sealed, or ErrDuplicate.
func (s *Store) appendChain(ctx context.Context, e *ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	req := &appendReq{entry: e, rec: rec, ctx: ctx, done: make(chan appendResult, 1), lead: make(chan struct{})}
	w := &s.chain
	w.mu.Lock()
	w.queue = append(w.queue, req)
	if w.writing {
		w.mu.Unlock()
		select {
		case r := <-req.done:
			return r.rec, r.err
		case <-req.lead:
		case <-ctx.Done():
			w.mu.Lock()
			if i := slices.Index(w.queue, req); i >= 0 && !req.led {
				// Still queued: withdraw it, nothing was written.
				w.queue = slices.Delete(w.queue, i, i+1)
				w.mu.Unlock()
				return ledger.AuditRecord{}, ctx.Err()
			}
			led := req.led
			w.mu.Unlock()
			if !led {
				// In a group being written: the outcome is unknown, as for a
				// commit whose answer is lost.
				return ledger.AuditRecord{}, ctx.Err()
			}
			// Handed the lead: write the queue for the others (this
			// append, cancelled, is answered without being written).
		}
	} else {
		w.writing = true
		w.mu.Unlock()
	}
	// This caller writes the queue (which holds its own append) once.
	w.mu.Lock()
	n := min(len(w.queue), maxGroup)
	group := w.queue[:n:n]
	w.queue = append([]*appendReq(nil), w.queue[n:]...)
	w.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	s.writeGroup(fctx, group)
	cancel()

	// Hand over: the oldest waiter writes the next group.
	w.mu.Lock()
	if len(w.queue) > 0 {
		w.queue[0].led = true
		close(w.queue[0].lead)
	} else {
		w.writing = false
	}
	w.mu.Unlock()
	r := <-req.done
	return r.rec, r.err
}

// writeGroup writes the appends of group and answers each of them.
func (s *Store) writeGroup(ctx context.Context, group []*appendReq) {
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.done <- appendResult{err: err} // never written
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	results, err := s.writeTx(ctx, live)
	var pe *pgconn.PgError
	if err != nil && len(live) > 1 && errors.As(err, &pe) {
		// The server refused the group: find the culprit by writing each
		// append alone.
		for _, r := range live {
			res, err := s.writeTx(ctx, []*appendReq{r})
			if err != nil {
				r.done <- appendResult{err: err}
			} else {
				r.done <- res[0]
			}
		}
		return
	}
	for i, r := range live {
		if err != nil {
			r.done <- appendResult{err: err}
		} else {
			r.done <- results[i]
		}
	}
}

// writeTx writes reqs in one transaction under the chain's lock.
func (s *Store) writeTx(ctx context.Context, reqs []*appendReq) (_ []appendResult, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	done := false
	defer func() {
		if done {
			return
		}
		// Part-way: roll back, or close the connection if even that fails,
		// so the server aborts the transaction and drops the lock and the
		// pool does not reuse the connection.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
			_ = conn.Conn().Close(rctx)
		}
	}()

	// Of two appends of one (tenant, key) in the group the first is kept;
	// the statement skips keys already stored.
	type ek struct{ tenant, key string }
	seen := map[ek]bool{}
	results := make([]appendResult, len(reqs))
	var (
		ids                                                                [][16]byte
		eTenant, eKey, owner, payer, amount, atomic, asset, network, payTo []string
		txHash, status, requestID, resource, channel, cumulative           []string
		eTime                                                              []time.Time
		aTime                                                              []time.Time
		kind, aTenant, subject                                             []string
		data                                                               [][]byte
		aEntry                                                             []*[16]byte
		sent                                                               []int // reqs index of each record sent
		entries                                                            []*ledger.Entry
	)
	for i, r := range reqs {
		if y := r.rec.Time.UTC().Year(); y < 1 || y > 9999 {
			// The server's time format and Go's agree on years 1 to 9999
			// only; a record outside them could not be verified.
			results[i] = appendResult{err: fmt.Errorf("%w: audit record time %s is outside the years 1 to 9999", ledger.ErrInvalid, r.rec.Time)}
			continue
		}
		var entry *[16]byte
		if e := r.entry; e != nil {
			k := ek{e.Tenant, e.IdempotencyKey}
			if seen[k] {
				results[i] = appendResult{err: ledger.ErrDuplicate}
				continue
			}
			seen[k] = true
			id := [16]byte(e.ID)
			entry = &id
			entries = append(entries, e)
		}
		rec := r.rec
		rec.Time = rec.Time.UTC().Truncate(time.Microsecond)
		aTime, kind, aTenant, subject = append(aTime, rec.Time), append(kind, rec.Kind), append(aTenant, rec.Tenant), append(subject, rec.Subject)
		data, aEntry = append(data, rec.Data), append(aEntry, entry)
		sent = append(sent, i)
	}

	// The entries are inserted before the lock, so two groups holding the
	// same keys in opposite orders would wait on each other's index
	// entries (a deadlock PostgreSQL breaks after deadlock_timeout): every
	// group inserts its entries in (tenant, key) order.
	slices.SortFunc(entries, func(a, b *ledger.Entry) int {
		return cmp.Or(strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.IdempotencyKey, b.IdempotencyKey))
	})
	for _, e := range entries {
		ids = append(ids, e.ID)
		eTenant, eKey, owner, payer = append(eTenant, e.Tenant), append(eKey, e.IdempotencyKey), append(owner, e.Owner), append(payer, e.Payer)
		amount, atomic, asset, network = append(amount, e.Amount), append(atomic, e.AmountAtomic), append(asset, e.Asset), append(network, e.Network)
		payTo, txHash, status = append(payTo, e.PayTo), append(txHash, e.TxHash), append(status, string(e.Status))
		requestID, resource, eTime = append(requestID, e.RequestID), append(resource, e.Resource), append(eTime, e.Time)
		channel, cumulative = append(channel, e.Channel), append(cumulative, e.Cumulative)
	}

	// One round trip: the lock, the group's statement and the COMMIT. The
	// server holds the lock only while it runs them.
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue("SET LOCAL synchronous_commit = off")
	// The records' statement finds each entry this transaction inserted
	// by id, under the lock: by the id index, never by reading the ledger
	// (which a planner misled by a young table's statistics would do).
	b.Queue("SET LOCAL enable_seqscan = off")
	if len(ids) > 0 {
		b.Queue(s.lq.insertEntries, ids, eTenant, eKey, owner, payer, amount, atomic, asset, network, payTo,
			txHash, status, requestID, resource, eTime, channel, cumulative)
	}
	b.Queue("SELECT pg_advisory_xact_lock($1), clock_timestamp()", s.lq.chainLock)
	b.Queue(s.lq.appendChain, aTime, kind, aTenant, subject, data, aEntry)
	b.Queue("SELECT clock_timestamp()")
	b.Queue("COMMIT")
	type written struct {
		seq        int64
		prev, hash string
	}
	got := make(map[int]written, len(sent))
	var locked, unlocking time.Time // by the server's clock
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		for range 3 + min(len(ids), 1) {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if err := br.QueryRow().Scan(nil, &locked); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				ord int
				w   written
			)
			if err := rows.Scan(&ord, &w.seq, &w.prev, &w.hash); err != nil {
				rows.Close()
				return err
			}
			got[ord] = w
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&unlocking); err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil { // COMMIT
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return nil, err
	}
	done = true
	s.chain.heldNanos.Add(int64(unlocking.Sub(locked)))
	s.chain.groups.Add(1)
	s.chain.appends.Add(int64(len(reqs)))
	// Each record as the server sealed it; the seal is computed here
	// again, outside the lock, and must match.
	for ord, i := range sent {
		r := reqs[i]
		w, ok := got[ord+1]
		if !ok {
			if r.entry != nil {
				results[i] = appendResult{err: ledger.ErrDuplicate}
			} else {
				results[i] = appendResult{err: errors.New("the audit record was not written")}
			}
			continue
		}
		sealed := ledger.Seal(r.rec, w.seq-1, w.prev)
		sealed.Data = append([]byte{}, r.rec.Data...)
		if sealed.Hash != w.hash {
			results[i] = appendResult{err: fmt.Errorf("audit record %d: the server's hash %s is not ledger.HashRecord's %s", w.seq, w.hash, sealed.Hash)}
			continue
		}
		results[i] = appendResult{rec: sealed}
	}
	// Durability, outside the lock: this transaction's commit is flushed
	// (with the session's synchronous_commit), and with it the group's.
	if _, err := conn.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		return nil, fmt.Errorf("wait for the commit to be durable: %w", err)
	}
	return results, nil
}
