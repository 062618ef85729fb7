package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
)

var (
	_ metrics.Store         = (*Store)(nil)
	_ metrics.RollupScanner = (*Store)(nil)
)

// MinEventRetention is the shortest raw-event retention a Store accepts:
// request ids are de-duplicated for at least this long (metrics.Store).
const MinEventRetention = 48 * time.Hour

// DefaultEventRetention is the raw-event retention of a zero Config.
const DefaultEventRetention = MinEventRetention

// pruneEvery is how often Append looks for raw events past retention.
const pruneEvery = time.Minute

// pruneBatch is how many raw events one prune transaction deletes at most;
// small batches keep the write lock short.
const pruneBatch = 5000

// Append reads each touched rollup row, adds its delta in Go and writes the
// totals back, all inside its immediate transaction.
const selectRollupSQL = `SELECT events, calls, errors, revenue_micros, latency, callers, caller_set, source_set
	FROM usage_rollups WHERE hour = ? AND api_id = ?`

// upsertRollupSQL writes a rollup in the current form: the caller sets in
// caller_set and source_set, the legacy packed callers column empty.
const upsertRollupSQL = `INSERT INTO usage_rollups (hour, api_id, owner, directory, events, calls, errors,
	revenue_micros, latency, callers, caller_set, source_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, x'', ?, ?)
	ON CONFLICT (hour, api_id) DO UPDATE SET owner = excluded.owner, directory = excluded.directory,
	events = excluded.events, calls = excluded.calls, errors = excluded.errors,
	revenue_micros = excluded.revenue_micros, latency = excluded.latency, callers = x'',
	caller_set = excluded.caller_set, source_set = excluded.source_set`

const selectRollupsSQL = `SELECT hour, api_id, owner, directory, events, calls, errors, revenue_micros, latency, callers,
	caller_set, source_set FROM usage_rollups WHERE hour >= ? AND hour < ? ORDER BY hour, api_id`

const selectRecentSQL = `SELECT request_id, time_us, api_id, endpoint, owner, directory, caller_id, client_net, payer, status,
	latency_ms, price_usd, billed_usd, lifecycle FROM usage_events ORDER BY time_us DESC, seq DESC LIMIT ?`

type rollupKey struct {
	hour int64
	api  string
}

// rollupDelta is what one Append adds to one (hour, API) rollup.
type rollupDelta struct {
	owner, directory             string
	events, calls, errs, revenue int64
	latency                      metrics.LatencyHistogram
	callers, sources             metrics.CallerSet
}

// Append implements metrics.Store. The events are normalized first (one
// invalid event rejects the batch); then, in one immediate transaction,
// they are inserted with ON CONFLICT (request_id) DO NOTHING, and the
// events that were inserted are folded, as HourRollup.Add would, into
// their (hour, API) rollup rows: each touched row is read, its delta added
// in Go (counters, packed latency, the caller and source sets merged) and
// written back with one UPSERT. The rollups therefore always agree with
// the stored events, whoever else writes the file.
//
// A batch is one op of the group committer (see group), so it runs on the
// committer's connection with its statements prepared once, and events go
// in eventChunk rows per INSERT. Written on a connection of its own, each
// batch's commit emptied the committer's page cache (SQLite cannot tell
// which pages another connection changed), about ten times a second under
// load.
func (s *Store) Append(ctx context.Context, events ...metrics.UsageEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	norm := make([]metrics.UsageEvent, len(events))
	for i, e := range events {
		n, err := metrics.NormalizeUsageEvent(e)
		if err != nil {
			return fmt.Errorf("sqlite: append: %w", err)
		}
		norm[i] = n
	}
	if len(norm) == 0 {
		return nil
	}
	now := s.now()
	if err := s.appendBatch(ctx, norm, now.UnixMicro()); err != nil {
		return fmt.Errorf("sqlite: append: %w", err)
	}
	s.maybePrune(ctx, now)
	return nil
}

// appendBatch runs Append's transaction as an op of the group committer.
func (s *Store) appendBatch(ctx context.Context, norm []metrics.UsageEvent, appendedUS int64) error {
	// The batch runs inside a savepoint: when it fails (an unreadable
	// rollup row, say) only its own writes are undone and only its caller
	// hears of it; the group's other ops commit as they would have.
	var batchErr error
	err := s.group(ctx, func(g *groupTx) error {
		if _, err := g.exec("SAVEPOINT usage_batch"); err != nil {
			return err
		}
		batchErr = s.appendEvents(g, norm, appendedUS)
		if batchErr != nil {
			if _, err := g.exec("ROLLBACK TO usage_batch"); err != nil {
				return err
			}
		}
		_, err := g.exec("RELEASE usage_batch")
		return err
	})
	if err != nil {
		return err
	}
	return batchErr
}

// eventChunk is the most events one INSERT of Append carries: a statement
// per event would cost a statement execution, and a trip through
// database/sql and the driver, per event. A batch is written in chunks of
// eventChunk rows and then, for the rest, of the powers of two below it,
// so Append prepares at most seven INSERTs, once per connection.
const eventChunk = 64

// insertEventsSQL returns the INSERT of n event rows, ignoring those whose
// request id is already stored.
func insertEventsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO usage_events (request_id, time_us, api_id, endpoint, owner, directory,
	caller_id, client_net, payer, status, latency_ms, price_usd, billed_usd, lifecycle, appended_us) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	b.WriteString(" ON CONFLICT (request_id) DO NOTHING")
	return b.String()
}

// insertEventsSQLs[k] inserts 1<<k rows.
var insertEventsSQLs = func() []string {
	var qs []string
	for n := 1; n <= eventChunk; n *= 2 {
		qs = append(qs, insertEventsSQL(n))
	}
	return qs
}()

// eventColumns is the number of bound values per event row.
const eventColumns = 15

const lastSeqSQL = `SELECT coalesce(max(seq), 0) FROM usage_events`

// appendEvents does Append's transaction. The batch keeps the first event
// of each request id and inserts them in order. When a statement inserted
// fewer rows than it carried (some request ids were already stored), the
// rows this transaction added are read back by seq to learn which were,
// so that only inserted events reach the rollups.
func (s *Store) appendEvents(g *groupTx, norm []metrics.UsageEvent, appendedUS int64) error {
	ctx := g.ctx
	batch := make([]*metrics.UsageEvent, 0, len(norm))
	seen := make(map[string]struct{}, len(norm))
	for i := range norm {
		if _, dup := seen[norm[i].RequestID]; dup {
			continue // the first event with a request id wins
		}
		seen[norm[i].RequestID] = struct{}{}
		batch = append(batch, &norm[i])
	}
	// seq grows under the write lock: the rows inserted below are those
	// above the largest seq now.
	last, err := g.stmt(lastSeqSQL)
	if err != nil {
		return err
	}
	var lastSeq int64
	if err := last.QueryRowContext(ctx).Scan(&lastSeq); err != nil {
		return fmt.Errorf("read last seq: %w", err)
	}
	args := make([]any, 0, eventColumns*min(len(batch), eventChunk))
	conflicts := false
	for rest := batch; len(rest) > 0; {
		k := 0 // the largest chunk of 1<<k rows that fits
		for k+1 < len(insertEventsSQLs) && 1<<(k+1) <= len(rest) {
			k++
		}
		chunk := rest[:1<<k]
		rest = rest[len(chunk):]
		args = args[:0]
		for _, e := range chunk {
			args = append(args, e.RequestID, e.Time.UnixMicro(), e.APIID, e.Endpoint, e.Owner, e.Directory,
				e.CallerID, e.ClientNet, e.Payer, e.Status, e.LatencyMs, e.PriceUSD.String(), e.BilledUSD.String(),
				string(e.Lifecycle), appendedUS)
		}
		ins, err := g.stmt(insertEventsSQLs[k])
		if err != nil {
			return err
		}
		res, err := ins.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(len(chunk)) {
			conflicts = true
		}
	}
	if conflicts {
		inserted, err := insertedSince(ctx, g.conn, lastSeq, len(batch))
		if err != nil {
			return err
		}
		kept := batch[:0]
		for _, e := range batch {
			if _, ok := inserted[e.RequestID]; ok {
				kept = append(kept, e)
			}
		}
		batch = kept
	}

	rollups := map[rollupKey]*rollupDelta{}
	var rollupOrder []rollupKey
	for _, e := range batch {
		// Fold the event in exactly as metrics.HourRollup.Add does.
		k := rollupKey{metrics.HourOf(e.Time).Unix(), e.APIID}
		d := rollups[k]
		if d == nil {
			d = &rollupDelta{}
			rollups[k] = d
			rollupOrder = append(rollupOrder, k)
		}
		d.events++
		d.owner, d.directory = e.Owner, e.Directory
		if !e.Countable {
			continue
		}
		d.calls++
		if e.IsFailure() {
			d.errs++
		}
		if e.Billable {
			m, _ := metrics.USDToMicros(e.BilledUSD) // validated by NormalizeUsageEvent
			d.revenue += m
		}
		d.latency.Observe(e.LatencyMs)
		d.callers.Add(e.CallerID, 1)
		d.sources.Add(e.Source(), 1)
	}
	if len(rollupOrder) == 0 {
		return nil
	}

	sel, err := g.stmt(selectRollupSQL)
	if err != nil {
		return err
	}
	up, err := g.stmt(upsertRollupSQL)
	if err != nil {
		return err
	}
	var names []string // usage_callers, loaded for the first legacy row
	for _, k := range rollupOrder {
		d := rollups[k]
		var (
			cur                             rollupTotals
			latency, legacy, callers, sourc []byte
		)
		err := sel.QueryRowContext(ctx, k.hour, k.api).Scan(&cur.events, &cur.calls, &cur.errs, &cur.revenue, &latency,
			&legacy, &callers, &sourc)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read rollup: %w", err)
		}
		if err := decodeLatency(latency, &cur.latency); err != nil {
			return fmt.Errorf("rollup %s@%d: %w", k.api, k.hour, err)
		}
		cur.latency.Merge(&d.latency)
		var callerSet, sourceSet metrics.CallerSet
		if callers == nil && len(legacy) > 0 {
			if names == nil {
				if names, err = s.callers.names(ctx, g.conn); err != nil {
					return err
				}
			}
			if err := decodeLegacyCallers(legacy, names, &callerSet); err != nil {
				return fmt.Errorf("rollup %s@%d: %w", k.api, k.hour, err)
			}
			sourceSet = callerSet.Clone()
		} else if err := decodeSets(callers, sourc, &callerSet, &sourceSet, nil); err != nil {
			return fmt.Errorf("rollup %s@%d: %w", k.api, k.hour, err)
		}
		callerSet.Merge(&d.callers)
		sourceSet.Merge(&d.sources)
		if _, err := up.ExecContext(ctx, k.hour, k.api, d.owner, d.directory, cur.events+d.events, cur.calls+d.calls,
			cur.errs+d.errs, cur.revenue+d.revenue, encodeLatency(&cur.latency),
			callerSet.AppendBinary([]byte{}), sourceSet.AppendBinary([]byte{})); err != nil {
			return fmt.Errorf("write rollup: %w", err)
		}
	}
	return nil
}

// insertedSince returns the request ids of the events stored after seq.
func insertedSince(ctx context.Context, conn querier, seq int64, hint int) (map[string]struct{}, error) {
	rows, err := conn.QueryContext(ctx, `SELECT request_id FROM usage_events WHERE seq > ?`, seq)
	if err != nil {
		return nil, fmt.Errorf("read inserted events: %w", err)
	}
	defer rows.Close()
	ids := make(map[string]struct{}, hint)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = struct{}{}
	}
	return ids, rows.Err()
}

// decodeSets decodes the two stored caller sets of a rollup row, interning
// ids in names (may be nil).
func decodeSets(callers, sources []byte, callerSet, sourceSet *metrics.CallerSet, names map[string]string) error {
	if err := callerSet.DecodeInterned(callers, names); err != nil {
		return fmt.Errorf("caller_set: %w", err)
	}
	if err := sourceSet.DecodeInterned(sources, names); err != nil {
		return fmt.Errorf("source_set: %w", err)
	}
	return nil
}

// decodeLegacyCallers reads the packed callers column of a row written
// before migration 4 into set.
func decodeLegacyCallers(blob []byte, names []string, set *metrics.CallerSet) error {
	return decodeCallers(blob, func(id, n int64) error {
		if id < 1 || id >= int64(len(names)) {
			return fmt.Errorf("names unknown caller %d", id)
		}
		set.Add(names[id], n)
		return nil
	})
}

// rollupTotals are a stored rollup's counters.
type rollupTotals struct {
	events, calls, errs, revenue int64
	latency                      metrics.LatencyHistogram
}

// encodeLatency packs a histogram: one unsigned varint per bucket.
func encodeLatency(h *metrics.LatencyHistogram) []byte {
	out := make([]byte, 0, len(h)+8)
	for _, n := range h {
		out = binary.AppendUvarint(out, uint64(n))
	}
	return out
}

// decodeLatency unpacks a histogram into h, which must be zero. A blob with
// fewer buckets than the histogram (from before buckets were appended)
// leaves the others at zero.
func decodeLatency(b []byte, h *metrics.LatencyHistogram) error {
	for i := 0; len(b) > 0; i++ {
		n, k := binary.Uvarint(b)
		if k <= 0 || i >= len(h) || n > 1<<62 {
			return errors.New("corrupt packed latency")
		}
		h[i] = int64(n)
		b = b[k:]
	}
	return nil
}

// maybePrune prunes raw events past retention at most once per pruneEvery
// per Store. Failures are left for the next attempt: retention is a bound
// on storage, not on correctness.
func (s *Store) maybePrune(ctx context.Context, now time.Time) {
	if s.retention < 0 {
		return
	}
	last := s.lastPrune.Load()
	if now.UnixNano()-last < int64(pruneEvery) || !s.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	_, _ = s.PruneEvents(ctx)
}

// PruneEvents deletes the raw usage events (and with them their request
// ids) appended longer than the retention ago, oldest first, in short
// transactions, and returns how many it deleted. Rollups are never pruned.
// Append calls it by itself about once a minute.
func (s *Store) PruneEvents(ctx context.Context) (int64, error) {
	if s.retention < 0 {
		return 0, nil
	}
	cutoff := s.now().Add(-s.retention).UnixMicro()
	var total int64
	for {
		// The oldest rows by seq are the oldest appended (seq grows under
		// the write lock); a row from a process with a late clock only
		// ends a round early.
		n, err := s.execWrite(ctx, `DELETE FROM usage_events WHERE seq IN
			(SELECT seq FROM usage_events ORDER BY seq LIMIT ?) AND appended_us < ?`, pruneBatch, cutoff)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlite: prune events: %w", err)
		}
		if n < pruneBatch {
			return total, nil
		}
	}
}

// Recent implements metrics.Store: the newest stored events by time, then
// by append order. Raw events are kept for the retention (Config.
// EventRetention), so older ones are not returned.
func (s *Store) Recent(ctx context.Context, limit int) ([]metrics.UsageEvent, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: recent: limit %d: %w", limit, metrics.ErrInvalidQuery)
	}
	var out []metrics.UsageEvent
	err := s.read(ctx, func() error {
		out = out[:0]
		rows, err := s.db.QueryContext(ctx, selectRecentSQL, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				e             metrics.UsageEvent
				us            int64
				price, billed string
				lifecycle     string
			)
			if err := rows.Scan(&e.RequestID, &us, &e.APIID, &e.Endpoint, &e.Owner, &e.Directory, &e.CallerID,
				&e.ClientNet, &e.Payer, &e.Status, &e.LatencyMs, &price, &billed, &lifecycle); err != nil {
				return err
			}
			e.Time = time.UnixMicro(us).UTC()
			if e.PriceUSD, err = decimal.NewFromString(price); err != nil {
				return fmt.Errorf("event %q: price %q: %w", e.RequestID, price, err)
			}
			if e.BilledUSD, err = decimal.NewFromString(billed); err != nil {
				return fmt.Errorf("event %q: billed %q: %w", e.RequestID, billed, err)
			}
			e.Lifecycle = metrics.Lifecycle(lifecycle)
			e.Countable, e.Billable = e.Lifecycle.Countable(), e.Lifecycle.Billable()
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: recent: %w", err)
	}
	return out, nil
}

// Rollups implements metrics.Store.
func (s *Store) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	var out []metrics.HourRollup
	err := s.scanRollups(ctx, q, func(r *metrics.HourRollup) { out = append(out, r.Clone()) }, func() { out = out[:0] })
	if err != nil {
		return nil, fmt.Errorf("sqlite: rollups: %w", err)
	}
	return out, nil
}

// ScanRollups implements metrics.RollupScanner: it streams the rollup rows
// of the range in primary-key order, from one read snapshot that also
// loads any new caller names, and hands fn one reused HourRollup per row.
func (s *Store) ScanRollups(ctx context.Context, q metrics.RollupQuery, fn func(*metrics.HourRollup)) error {
	if err := s.scanRollups(ctx, q, fn, nil); err != nil {
		return fmt.Errorf("sqlite: scan rollups: %w", err)
	}
	return nil
}

// hourBounds turns q into the half-open range of hour starts in Unix
// seconds: From <= hour < To, for whole-second hours.
func hourBounds(q metrics.RollupQuery) (lo, hi int64) {
	lo, hi = math.MinInt64, math.MaxInt64
	ceil := func(t time.Time) int64 {
		s := t.Unix()
		if t.Nanosecond() > 0 {
			s++
		}
		return s
	}
	if !q.From.IsZero() {
		lo = ceil(q.From)
	}
	if !q.To.IsZero() {
		hi = ceil(q.To)
	}
	return lo, hi
}

// scanRollups runs the scan; restart, when not nil, is called before a
// retry of a scan that failed on a busy database before visiting anything.
func (s *Store) scanRollups(ctx context.Context, q metrics.RollupQuery, fn func(*metrics.HourRollup), restart func()) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("%w: To is before From", err)
	}
	lo, hi := hourBounds(q)
	var (
		visited bool
		lastErr error
	)
	return s.read(ctx, func() error {
		if visited {
			// Never replay a partly visited scan: fn has seen some rollups.
			return fmt.Errorf("%w (after part of the scan)", lastErr)
		}
		if restart != nil {
			restart()
		}
		lastErr = s.readTx(ctx, func(conn *sql.Conn) error {
			// The caller names first, in the same snapshot: every id a
			// rollup of the snapshot names is then known.
			names, err := s.callers.names(ctx, conn)
			if err != nil {
				return err
			}
			return scanRollupRows(ctx, conn, lo, hi, names, func(r *metrics.HourRollup) {
				visited = true
				fn(r)
			})
		})
		return lastErr
	})
}

func scanRollupRows(ctx context.Context, conn *sql.Conn, lo, hi int64, names []string, fn func(*metrics.HourRollup)) error {
	rows, err := conn.QueryContext(ctx, selectRollupsSQL, lo, hi)
	if err != nil {
		return err
	}
	defer rows.Close()

	interned := map[string]string{} // one string per distinct name per scan
	ids := map[string]string{}      // caller and source ids (CallerSet.DecodeInterned)
	intern := func(b sql.RawBytes) string {
		if v, ok := interned[string(b)]; ok {
			return v
		}
		v := string(b)
		interned[v] = v
		return v
	}
	var (
		r                              metrics.HourRollup
		hour                           int64
		api, owner, dir, latency, blob sql.RawBytes
		callerBlob, sourceBlob         sql.RawBytes
		hourTimes                      = map[int64]time.Time{}
	)
	dest := []any{&hour, &api, &owner, &dir, &r.Events, &r.Calls, &r.Errors, &r.RevenueMicros, &latency, &blob,
		&callerBlob, &sourceBlob}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		r.APIID, r.Owner, r.Directory = intern(api), intern(owner), intern(dir)
		t, ok := hourTimes[hour]
		if !ok {
			t = time.Unix(hour, 0).UTC()
			hourTimes[hour] = t
		}
		r.Hour = t
		r.Latency = metrics.LatencyHistogram{}
		if err := decodeLatency(latency, &r.Latency); err != nil {
			return fmt.Errorf("rollup %s@%d: %w", r.APIID, hour, err)
		}
		if callerBlob == nil && len(blob) > 0 {
			// A row written before migration 4: sources are its callers.
			r.Callers.Reset()
			if err := decodeLegacyCallers(blob, names, &r.Callers); err != nil {
				return fmt.Errorf("rollup %s@%d: %w", r.APIID, hour, err)
			}
			r.Sources = r.Callers.Clone()
		} else if err := decodeSets(callerBlob, sourceBlob, &r.Callers, &r.Sources, ids); err != nil {
			return fmt.Errorf("rollup %s@%d: %w", r.APIID, hour, err)
		}
		fn(&r)
	}
	return rows.Err()
}

// readTx runs fn in one deferred (read) transaction on a dedicated
// connection, so that all its queries see one snapshot of the database.
func (s *Store) readTx(ctx context.Context, fn func(conn *sql.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	healthy := false
	defer func() {
		if !healthy {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		healthy = true
		return err
	}
	err = fn(conn)
	if _, endErr := conn.ExecContext(context.WithoutCancel(ctx), "COMMIT"); endErr == nil {
		healthy = true
	} else if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr == nil {
		healthy = true
	}
	return err
}
