package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
)

var (
	_ metrics.Store         = (*Store)(nil)
	_ metrics.RollupScanner = (*Store)(nil)
)

type metricsQueries struct {
	batchSeq, insertEvents, upsertRollup, updateSets, deleteLegacy, recent, rollups, purge string
}

func buildMetricsQueries(schema string) metricsQueries {
	r := strings.NewReplacer(
		"{events}", pgx.Identifier{schema, "usage_events"}.Sanitize(),
		"{rollups}", pgx.Identifier{schema, "usage_rollups"}.Sanitize(),
		"{callers}", pgx.Identifier{schema, "usage_rollup_callers"}.Sanitize(),
	)
	const eventColumns = `request_id, time, api_id, endpoint, owner, directory, caller_id, client_net, payer, status,
		latency_ms, price_micros, billed_micros, lifecycle, billable, countable`
	return metricsQueries{
		batchSeq: pgx.Identifier{schema, "usage_batch"}.Sanitize(),
		// Rows are inserted in request_id order, so that concurrent appends
		// of overlapping ids wait for each other in one global order and
		// cannot deadlock; ord keeps the call's order for Recent.
		insertEvents: r.Replace(`WITH b AS (SELECT nextval($1::regclass) AS id)
			INSERT INTO {events} (batch, ord, ` + eventColumns + `)
			SELECT b.id, u.ord, u.request_id, u.time, u.api_id, u.endpoint, u.owner, u.directory, u.caller_id,
				u.client_net, u.payer, u.status, u.latency_ms, u.price_micros, u.billed_micros, u.lifecycle, u.billable,
				u.countable
			FROM b, unnest($2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::text[], $11::text[], $12::int[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[],
				$17::bool[], $18::bool[])
				AS u(ord, request_id, time, api_id, endpoint, owner, directory, caller_id, client_net, payer, status,
					latency_ms, price_micros, billed_micros, lifecycle, billable, countable)
			ORDER BY u.request_id COLLATE "C"
			ON CONFLICT (request_id) DO NOTHING
			RETURNING request_id`),
		upsertRollup: r.Replace(`INSERT INTO {rollups} AS r
				(hour, api_id, owner, directory, events, calls, errors, revenue_micros, latency)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (hour, api_id) DO UPDATE SET
				owner = excluded.owner,
				directory = excluded.directory,
				events = r.events + excluded.events,
				calls = r.calls + excluded.calls,
				errors = r.errors + excluded.errors,
				revenue_micros = r.revenue_micros + excluded.revenue_micros,
				latency = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0)
					FROM unnest(r.latency, excluded.latency) WITH ORDINALITY AS u(a, b, i) ORDER BY i)
			RETURNING r.caller_set, r.source_set,
				CASE WHEN r.caller_set IS NULL THEN (SELECT array_agg(c.caller_id ORDER BY c.caller_id) FROM {callers} c
					WHERE c.hour = r.hour AND c.api_id = r.api_id) END,
				CASE WHEN r.caller_set IS NULL THEN (SELECT array_agg(c.calls ORDER BY c.caller_id) FROM {callers} c
					WHERE c.hour = r.hour AND c.api_id = r.api_id) END`),
		// The upsert above locked the row until COMMIT: the merged sets
		// written here cannot lose a concurrent append's.
		updateSets:   r.Replace(`UPDATE {rollups} SET caller_set = $3, source_set = $4 WHERE hour = $1 AND api_id = $2`),
		deleteLegacy: r.Replace(`DELETE FROM {callers} WHERE hour = $1 AND api_id = $2`),
		recent:       r.Replace(`SELECT ` + eventColumns + ` FROM {events} ORDER BY time DESC, batch DESC, ord DESC LIMIT $1`),
		// One statement, so the rollup and its callers come from one snapshot.
		// Rows from before migration 5 (caller_set NULL) read their callers
		// from usage_rollup_callers.
		rollups: r.Replace(`SELECT r.api_id, r.hour, r.owner, r.directory, r.events, r.calls, r.errors, r.revenue_micros,
				r.latency, r.caller_set, r.source_set, coalesce(c.ids, '{}'), coalesce(c.calls, '{}')
			FROM {rollups} r
			LEFT JOIN LATERAL (
				SELECT array_agg(caller_id) AS ids, array_agg(calls) AS calls
				FROM {callers} c WHERE c.hour = r.hour AND c.api_id = r.api_id
			) c ON r.caller_set IS NULL
			WHERE ($1::timestamptz IS NULL OR r.hour >= $1) AND ($2::timestamptz IS NULL OR r.hour < $2)
			ORDER BY r.hour, r.api_id`),
		purge: r.Replace(`DELETE FROM {events} WHERE request_id IN (
				SELECT request_id FROM {events} WHERE time < $1 LIMIT 10000)`),
	}
}

type rollupKey struct {
	hour time.Time
	api  string
}

// Append implements metrics.Store in one transaction: the events are
// inserted with ON CONFLICT (request_id) DO NOTHING, and only those actually
// inserted are folded into the hourly rollups and caller counts, which are
// upserted in a fixed (hour, api, caller) order.
func (s *Store) Append(ctx context.Context, events ...metrics.UsageEvent) error {
	if len(events) == 0 {
		return nil
	}
	norm := make([]metrics.UsageEvent, 0, len(events))
	seen := make(map[string]struct{}, len(events))
	for _, e := range events {
		n, err := metrics.NormalizeUsageEvent(e)
		if err != nil {
			return err
		}
		if _, dup := seen[n.RequestID]; dup {
			continue // the first one in the call wins
		}
		seen[n.RequestID] = struct{}{}
		norm = append(norm, n)
	}
	k := len(norm)
	var (
		ords                                                  = make([]int32, k)
		ids, apis, endpoints, owners, dirs, callers, lifecycs = make([]string, k), make([]string, k), make([]string, k), make([]string, k), make([]string, k), make([]string, k), make([]string, k)
		nets, payers                                          = make([]string, k), make([]string, k)
		times                                                 = make([]time.Time, k)
		statuses                                              = make([]int32, k)
		latencies, prices, billed                             = make([]int64, k), make([]int64, k), make([]int64, k)
		billable, countable                                   = make([]bool, k), make([]bool, k)
	)
	for i, e := range norm {
		ords[i], ids[i], times[i], apis[i], endpoints[i] = int32(i), e.RequestID, e.Time, e.APIID, e.Endpoint
		owners[i], dirs[i], callers[i], statuses[i], latencies[i] = e.Owner, e.Directory, e.CallerID, int32(e.Status), e.LatencyMs
		nets[i], payers[i] = e.ClientNet, e.Payer
		prices[i], _ = metrics.USDToMicros(e.PriceUSD) // validated by NormalizeUsageEvent
		billed[i], _ = metrics.USDToMicros(e.BilledUSD)
		lifecycs[i], billable[i], countable[i] = string(e.Lifecycle), e.Billable, e.Countable
	}

	// Two round trips: BEGIN and the event insert; then the rollup upserts
	// and COMMIT, so the rollup rows stay locked for one round trip only.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: append %d usage events: %w", len(norm), err)
	}
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
				_ = conn.Conn().Close(rctx)
			}
		}
	}()
	err = func() error {
		b := &pgx.Batch{}
		b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
		b.Queue(s.mq.insertEvents, s.mq.batchSeq, ords, ids, times, apis, endpoints, owners, dirs,
			callers, nets, payers, statuses, latencies, prices, billed, lifecycs, billable, countable)
		inserted := make(map[string]struct{}, len(norm))
		err := func() error {
			br := conn.SendBatch(ctx, b)
			defer br.Close()
			if _, err := br.Exec(); err != nil {
				return err
			}
			rows, err := br.Query()
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			for _, id := range got {
				inserted[id] = struct{}{}
			}
			return br.Close()
		}()
		if err != nil {
			return err
		}
		// Fold in call order, so Owner and Directory are the last event's.
		groups := map[rollupKey]*metrics.HourRollup{}
		for _, e := range norm {
			if _, ok := inserted[e.RequestID]; !ok {
				continue
			}
			key := rollupKey{metrics.HourOf(e.Time), e.APIID}
			r := groups[key]
			if r == nil {
				nr := metrics.NewHourRollup(e.APIID, e.Time)
				r = &nr
				groups[key] = r
			}
			r.Add(e)
		}
		keys := make([]rollupKey, 0, len(groups))
		for key := range groups {
			keys = append(keys, key)
		}
		slices.SortFunc(keys, func(a, b rollupKey) int {
			if c := a.hour.Compare(b.hour); c != 0 {
				return c
			}
			return strings.Compare(a.api, b.api)
		})
		// The counters are added in SQL; each upsert also locks its row and
		// returns the stored caller sets, which are merged in Go and written
		// back before COMMIT (rows in one fixed order: no deadlocks).
		b = &pgx.Batch{}
		for _, key := range keys {
			r := groups[key]
			b.Queue(s.mq.upsertRollup, r.Hour, r.APIID, r.Owner, r.Directory, r.Events, r.Calls, r.Errors,
				r.RevenueMicros, r.Latency[:])
		}
		type stored struct {
			callers, sources []byte
			legacyIDs        []string
			legacyCalls      []int64
		}
		olds := make([]stored, len(keys))
		err = func() error {
			br := conn.SendBatch(ctx, b)
			defer br.Close()
			for i := range keys {
				o := &olds[i]
				if err := br.QueryRow().Scan(&o.callers, &o.sources, &o.legacyIDs, &o.legacyCalls); err != nil {
					return err
				}
			}
			return br.Close()
		}()
		if err != nil {
			return err
		}
		b = &pgx.Batch{}
		for i, key := range keys {
			r, o := groups[key], &olds[i]
			var callerSet, sourceSet metrics.CallerSet
			if o.callers == nil {
				// A rollup from before migration 5 (or a new one).
				for j, id := range o.legacyIDs {
					if j < len(o.legacyCalls) {
						callerSet.Add(id, o.legacyCalls[j])
					}
				}
				sourceSet = callerSet.Clone()
				if len(o.legacyIDs) > 0 {
					b.Queue(s.mq.deleteLegacy, r.Hour, r.APIID)
				}
			} else {
				if err := callerSet.UnmarshalBinary(o.callers); err != nil {
					return fmt.Errorf("rollup %s@%s caller_set: %w", r.APIID, r.Hour, err)
				}
				if err := sourceSet.UnmarshalBinary(o.sources); err != nil {
					return fmt.Errorf("rollup %s@%s source_set: %w", r.APIID, r.Hour, err)
				}
			}
			callerSet.Merge(&r.Callers)
			sourceSet.Merge(&r.Sources)
			b.Queue(s.mq.updateSets, r.Hour, r.APIID, callerSet.AppendBinary([]byte{}), sourceSet.AppendBinary([]byte{}))
		}
		b.Queue("COMMIT")
		return conn.SendBatch(ctx, b).Close()
	}()
	if err == nil {
		committed = true
	}
	if err != nil {
		return fmt.Errorf("postgres: append %d usage events: %w", len(norm), err)
	}
	return nil
}

// Recent implements metrics.Store.
func (s *Store) Recent(ctx context.Context, limit int) ([]metrics.UsageEvent, error) {
	if limit < 1 {
		return nil, fmt.Errorf("%w: limit %d is below 1", metrics.ErrInvalidQuery, limit)
	}
	rows, err := s.pool.Query(ctx, s.mq.recent, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: recent usage events: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metrics.UsageEvent, error) {
		var (
			e             metrics.UsageEvent
			status        int32
			price, billed int64
			lifecycle     string
		)
		err := r.Scan(&e.RequestID, &e.Time, &e.APIID, &e.Endpoint, &e.Owner, &e.Directory, &e.CallerID, &e.ClientNet, &e.Payer, &status,
			&e.LatencyMs, &price, &billed, &lifecycle, &e.Billable, &e.Countable)
		e.Time = e.Time.UTC()
		e.Status = int(status)
		e.PriceUSD = decimal.New(price, -metrics.MaxUSDDecimals)
		e.BilledUSD = decimal.New(billed, -metrics.MaxUSDDecimals)
		e.Lifecycle = metrics.Lifecycle(lifecycle)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: recent usage events: %w", err)
	}
	return out, nil
}

// Rollups implements metrics.Store.
func (s *Store) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	var out []metrics.HourRollup
	err := s.scanRollups(ctx, q, func(r *metrics.HourRollup) { out = append(out, r.Clone()) })
	return out, err
}

// ScanRollups implements metrics.RollupScanner: one rollup value and one
// Callers map are reused for every row.
func (s *Store) ScanRollups(ctx context.Context, q metrics.RollupQuery, fn func(*metrics.HourRollup)) error {
	return s.scanRollups(ctx, q, fn)
}

func (s *Store) scanRollups(ctx context.Context, q metrics.RollupQuery, fn func(*metrics.HourRollup)) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("%w: rollup range ends before it starts", err)
	}
	var from, to *time.Time
	if !q.From.IsZero() {
		t := ceilMicro(q.From)
		from = &t
	}
	if !q.To.IsZero() {
		t := ceilMicro(q.To)
		to = &t
	}
	rows, err := s.pool.Query(ctx, s.mq.rollups, from, to)
	if err != nil {
		return fmt.Errorf("postgres: rollups: %w", err)
	}
	defer rows.Close()
	var (
		r                      metrics.HourRollup
		latency, calls         []int64
		ids                    []string
		callerBlob, sourceBlob []byte
		interned               = map[string]string{}
	)
	for rows.Next() {
		if err := rows.Scan(&r.APIID, &r.Hour, &r.Owner, &r.Directory, &r.Events, &r.Calls, &r.Errors,
			&r.RevenueMicros, &latency, &callerBlob, &sourceBlob, &ids, &calls); err != nil {
			return fmt.Errorf("postgres: rollups: %w", err)
		}
		r.Hour = r.Hour.UTC()
		r.Latency = metrics.LatencyHistogram{}
		for i, n := range latency {
			// A newer build may have appended buckets: fold them into the last.
			r.Latency[min(i, metrics.LatencyBuckets-1)] += n
		}
		if callerBlob == nil {
			// A row from before migration 5: its sources are its callers.
			r.Callers.Reset()
			for i, id := range ids {
				if i < len(calls) {
					r.Callers.Add(id, calls[i])
				}
			}
			r.Sources = r.Callers.Clone()
		} else {
			if err := r.Callers.DecodeInterned(callerBlob, interned); err != nil {
				return fmt.Errorf("postgres: rollup %s@%s caller_set: %w", r.APIID, r.Hour, err)
			}
			if err := r.Sources.DecodeInterned(sourceBlob, interned); err != nil {
				return fmt.Errorf("postgres: rollup %s@%s source_set: %w", r.APIID, r.Hour, err)
			}
		}
		fn(&r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: rollups: %w", err)
	}
	return nil
}

// PurgeUsageEvents deletes raw usage events older than before and returns
// how many it deleted. Rollups are kept. A request id whose event was purged
// is forgotten: an event appended again with it would be counted again, so
// keep at least 48 hours (metrics.Store's retention). No goroutine purges on
// its own; call it from a maintenance job.
func (s *Store) PurgeUsageEvents(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.mq.purge, before)
		if err != nil {
			return total, fmt.Errorf("postgres: purge usage events: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
