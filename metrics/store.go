package metrics

import (
	"context"
	"time"
)

// Store is the usage-event port: an append-only event log plus the hourly
// rollups analytics reads. Implementations must be safe for concurrent use.
//
// Analytics never reads raw events: a store maintains one HourRollup per API
// per UTC hour, updated as events are appended. A SQL adapter does it in the
// same transaction as the event insert: insert the event with ON CONFLICT
// (request_id) DO NOTHING and, only when a row was inserted, fold it into
// its (api, hour) rollup row as HourRollup.Add does in memory: counters
// added, latency buckets added, and the two caller sets read, merged in Go
// (CallerSet.Merge) and written back in their binary form
// (CallerSet.AppendBinary), so that a rollup row stays bounded however many
// callers an hour sees.
type Store interface {
	// Append normalizes and stores events (see NormalizeUsageEvent) and
	// updates the rollups. An event whose RequestID the store has already
	// seen is ignored, also within one call: the first one wins. Stores may
	// forget request ids after a documented retention (48 hours or more).
	// If any event is invalid, Append returns an error wrapping
	// ErrInvalidEvent and stores none of them.
	Append(ctx context.Context, events ...UsageEvent) error
	// Recent returns up to limit stored events, newest first: by Time
	// descending, then by append order descending. A store may keep only
	// a bounded number of the most recently appended raw events. A limit
	// below 1 is an error wrapping ErrInvalidQuery.
	Recent(ctx context.Context, limit int) ([]UsageEvent, error)
	// Rollups returns the hourly rollups whose Hour lies in q's range,
	// ordered by Hour, then APIID. The caller owns the result.
	Rollups(ctx context.Context, q RollupQuery) ([]HourRollup, error)
}

// RollupScanner is an optional ability of a Store: visiting the rollups
// Rollups would return without copying them. fn must not keep the rollup
// or its caller sets, and must not call the store. BuildMarketplaceAnalytics
// uses it when the store has it.
type RollupScanner interface {
	ScanRollups(ctx context.Context, q RollupQuery, fn func(*HourRollup)) error
}

// RollupQuery selects hourly rollups by the start of their hour: From <=
// Hour < To. A zero From or To leaves that side unbounded; To before From is
// an error wrapping ErrInvalidQuery.
type RollupQuery struct {
	From, To time.Time
}

// Validate checks the range.
func (q RollupQuery) Validate() error {
	if !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From) {
		return ErrInvalidQuery
	}
	return nil
}

// Contains reports whether an hour start lies in the range.
func (q RollupQuery) Contains(hour time.Time) bool {
	return (q.From.IsZero() || !hour.Before(q.From)) && (q.To.IsZero() || hour.Before(q.To))
}

// HourRollup aggregates one API's events over one UTC hour.
type HourRollup struct {
	// APIID is the tenant slug; Hour the UTC start of the hour.
	APIID string    `json:"apiId"`
	Hour  time.Time `json:"hour"`
	// Owner and Directory are those of the most recently appended event.
	Owner     string `json:"owner"`
	Directory string `json:"directory"`
	// Events counts every event, countable or not.
	Events int64 `json:"events"`
	// Calls counts countable events; Errors those of them that failed
	// (see UsageEvent.IsFailure).
	Calls  int64 `json:"calls"`
	Errors int64 `json:"errors"`
	// RevenueMicros sums BilledUSD of billable events in micro-USD.
	RevenueMicros int64 `json:"revenueMicros"`
	// Callers counts the calls per caller id (UsageEvent.CallerID) of
	// the calls; Sources the calls per source (UsageEvent.Source), the
	// identity the trending score measures diversity on. Both are bounded
	// (see CallerSet), and only calls are counted.
	Callers CallerSet `json:"callers"`
	Sources CallerSet `json:"sources"`
	// Latency holds the latencies of the calls.
	Latency LatencyHistogram `json:"latency"`
}

// HourOf returns the UTC hour an event time is rolled up into.
func HourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// NewHourRollup returns an empty rollup for an API and the hour of t.
func NewHourRollup(apiID string, t time.Time) HourRollup {
	return HourRollup{APIID: apiID, Hour: HourOf(t)}
}

// Add folds one normalized event into the rollup. The event must belong to
// the rollup's API and hour.
func (r *HourRollup) Add(e UsageEvent) {
	r.Events++
	r.Owner, r.Directory = e.Owner, e.Directory
	if !e.Countable {
		return
	}
	r.Calls++
	if e.IsFailure() {
		r.Errors++
	}
	if e.Billable {
		m, _ := USDToMicros(e.BilledUSD) // validated by NormalizeUsageEvent
		r.RevenueMicros += m
	}
	r.Callers.Add(e.CallerID, 1)
	r.Sources.Add(e.Source(), 1)
	r.Latency.Observe(e.LatencyMs)
}

// Clone returns a deep copy.
func (r *HourRollup) Clone() HourRollup {
	c := *r
	c.Callers, c.Sources = r.Callers.Clone(), r.Sources.Clone()
	return c
}
