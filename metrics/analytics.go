package metrics

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// APIInfo describes a published API (tenant), so analytics can count APIs
// that had no traffic in a window and use their current directory.
type APIInfo struct {
	APIID     string `json:"apiId"`
	Owner     string `json:"owner,omitempty"`
	Directory string `json:"directory,omitempty"`
}

// APIStats aggregates one API over a window.
type APIStats struct {
	APIID     string
	Owner     string
	Directory string
	// Published is true when the API was in the published list.
	Published bool
	Events    int64
	Calls     int64
	Errors    int64
	// RevenueMicros is the billed revenue in micro-USD.
	RevenueMicros int64
	// UniqueCallers counts distinct caller ids (UsageEvent.CallerID) with
	// a call; UniqueSources distinct sources (UsageEvent.Source), the
	// figure the trending score uses. Both are exact up to ExactCallers
	// and estimates (about 1%) beyond.
	UniqueCallers int
	UniqueSources int
	// MaxCallerCalls is the number of calls of the API's busiest caller
	// id, MaxSourceCalls of its busiest source (upper estimates once their
	// sets are sketched; see CallerSet.MaxCalls).
	MaxCallerCalls int64
	MaxSourceCalls int64
	// MaxHourCalls is the number of calls in the API's busiest hour.
	MaxHourCalls int64
	// ActiveHours is the number of hours with at least one call.
	ActiveHours int
	Latency     LatencyHistogram

	lastHour time.Time
	callers  CallerSet
	sources  CallerSet
}

// ErrorRate is Errors/Calls, 0 without calls.
func (a *APIStats) ErrorRate() float64 { return ratio(a.Errors, a.Calls) }

// P95LatencyMs is the 95th percentile latency of the calls (bucket upper
// bound).
func (a *APIStats) P95LatencyMs() int64 { return a.Latency.Quantile(0.95) }

// MaxCallerShare is the busiest caller id's share of the calls.
func (a *APIStats) MaxCallerShare() float64 { return ratio(a.MaxCallerCalls, a.Calls) }

// MaxSourceShare is the busiest source's share of the calls.
func (a *APIStats) MaxSourceShare() float64 { return ratio(a.MaxSourceCalls, a.Calls) }

// MaxHourShare is the busiest hour's share of the calls.
func (a *APIStats) MaxHourShare() float64 { return ratio(a.MaxHourCalls, a.Calls) }

// ScoreInputs returns what ComputeTrendingScore needs: diversity comes
// from sources, never from asserted caller ids.
func (a *APIStats) ScoreInputs() ScoreInputs {
	return ScoreInputs{
		Calls: a.Calls, Errors: a.Errors, RevenueMicros: a.RevenueMicros,
		UniqueSources: a.UniqueSources, P95LatencyMs: a.P95LatencyMs(),
		MaxSourceCalls: a.MaxSourceCalls, MaxHourCalls: a.MaxHourCalls,
	}
}

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// DirectoryStats aggregates the APIs of one directory over a window.
type DirectoryStats struct {
	Directory     string
	APIs          int
	Calls         int64
	Errors        int64
	RevenueMicros int64
	// UniqueCallers counts the distinct caller ids of the directory's APIs.
	UniqueCallers int
}

// WindowSnapshot is every API's and directory's aggregate over a window.
type WindowSnapshot struct {
	Window Window
	Range  RollupQuery
	// APIs holds every API seen in the window or published, by APIID.
	APIs []APIStats
	// Directories is ordered by name.
	Directories []DirectoryStats
	// ActiveCallers counts distinct caller ids with at least one call
	// (exact up to ExactCallers, an estimate beyond).
	ActiveCallers int
	Calls         int64
	RevenueMicros int64
}

// BuildWindowSnapshot aggregates hourly rollups into a window snapshot at
// time now. Rollups outside the window are ignored, so a caller may pass a
// superset. Published APIs appear even without traffic, and their Owner and
// Directory (when set) take precedence over those seen in events; otherwise
// an API takes them from its latest hour in the window.
func BuildWindowSnapshot(w Window, now time.Time, rollups []HourRollup, published []APIInfo) (*WindowSnapshot, error) {
	b, err := newSnapshotBuilder(w, now)
	if err != nil {
		return nil, err
	}
	for i := range rollups {
		b.add(&rollups[i])
	}
	return b.finish(published), nil
}

// snapshotBuilder folds rollups into per-API aggregates one at a time, so a
// RollupScanner can feed it without copying.
type snapshotBuilder struct {
	snap  *WindowSnapshot
	byAPI map[string]*APIStats
}

func newSnapshotBuilder(w Window, now time.Time) (*snapshotBuilder, error) {
	if _, err := ParseWindow(string(w)); err != nil || w == "" {
		return nil, fmt.Errorf("%w: window %q", ErrInvalidQuery, w)
	}
	return &snapshotBuilder{snap: &WindowSnapshot{Window: w, Range: w.Range(now)}, byAPI: map[string]*APIStats{}}, nil
}

func (b *snapshotBuilder) get(id string) *APIStats {
	a, ok := b.byAPI[id]
	if !ok {
		a = &APIStats{APIID: id, Directory: DefaultDirectory}
		b.byAPI[id] = a
	}
	return a
}

// add folds one rollup in; it does not keep r.
func (b *snapshotBuilder) add(r *HourRollup) {
	if !b.snap.Range.Contains(r.Hour) {
		return
	}
	a := b.get(r.APIID)
	if !r.Hour.Before(a.lastHour) {
		a.lastHour = r.Hour
		a.Owner, a.Directory = r.Owner, r.Directory
	}
	a.Events += r.Events
	a.Calls += r.Calls
	a.Errors += r.Errors
	a.RevenueMicros += r.RevenueMicros
	a.Latency.Merge(&r.Latency)
	if r.Calls > 0 {
		a.ActiveHours++
		a.MaxHourCalls = max(a.MaxHourCalls, r.Calls)
	}
	a.callers.Merge(&r.Callers)
	a.sources.Merge(&r.Sources)
}

func (b *snapshotBuilder) finish(published []APIInfo) *WindowSnapshot {
	snap, byAPI, get := b.snap, b.byAPI, b.get
	for _, p := range published {
		id := strings.TrimSpace(p.APIID)
		if id == "" {
			continue
		}
		a := get(id)
		a.Published = true
		if p.Owner != "" {
			a.Owner = p.Owner
		}
		if p.Directory != "" {
			a.Directory = p.Directory
		}
	}

	var everyone CallerSet
	dirs := map[string]*DirectoryStats{}
	dirCallers := map[string]*CallerSet{}
	snap.APIs = make([]APIStats, 0, len(byAPI))
	for _, a := range byAPI {
		a.UniqueCallers, a.MaxCallerCalls = a.callers.Distinct(), a.callers.MaxCalls()
		a.UniqueSources, a.MaxSourceCalls = a.sources.Distinct(), a.sources.MaxCalls()
		d, ok := dirs[a.Directory]
		if !ok {
			d = &DirectoryStats{Directory: a.Directory}
			dirs[a.Directory] = d
			dirCallers[a.Directory] = &CallerSet{}
		}
		d.APIs++
		d.Calls += a.Calls
		d.Errors += a.Errors
		d.RevenueMicros += a.RevenueMicros
		dirCallers[a.Directory].Merge(&a.callers)
		everyone.Merge(&a.callers)
		snap.Calls += a.Calls
		snap.RevenueMicros += a.RevenueMicros
		a.callers, a.sources = CallerSet{}, CallerSet{}
		snap.APIs = append(snap.APIs, *a)
	}
	slices.SortFunc(snap.APIs, func(x, y APIStats) int { return strings.Compare(x.APIID, y.APIID) })
	for name, d := range dirs {
		d.UniqueCallers = dirCallers[name].Distinct()
		snap.Directories = append(snap.Directories, *d)
	}
	slices.SortFunc(snap.Directories, func(x, y DirectoryStats) int { return strings.Compare(x.Directory, y.Directory) })
	snap.ActiveCallers = everyone.Distinct()
	return snap
}

// ScoreInputs are the figures the trending score is computed from.
// Diversity is measured on sources (UsageEvent.Source): distinct verified
// payers for paid calls and distinct client networks for free ones.
type ScoreInputs struct {
	Calls          int64
	Errors         int64
	RevenueMicros  int64
	UniqueSources  int
	P95LatencyMs   int64
	MaxSourceCalls int64
	MaxHourCalls   int64
}

// ComputeTrendingScore returns an API's trending score, rounded to four
// decimals; 0 without calls. The formula is in the package documentation.
func ComputeTrendingScore(in ScoreInputs) float64 {
	if in.Calls <= 0 {
		return 0
	}
	calls := float64(in.Calls)
	callers := float64(max(in.UniqueSources, 0))
	cents := float64(max(in.RevenueMicros, 0)) / 1e4
	errRate := clamp01(float64(in.Errors) / calls)
	callerShare := clamp01(float64(in.MaxSourceCalls) / calls)
	hourShare := clamp01(float64(in.MaxHourCalls) / calls)
	diversity := clamp01(callers / math.Sqrt(calls))

	activity := math.Log1p(calls) + math.Log1p(callers) + math.Log1p(cents)
	quality := (1 - errRate) * (1 - errRate) / (1 + float64(max(in.P95LatencyMs, 0))/1000)
	fairness := (0.5 + 0.5*diversity) * (1 - 0.5*callerShare) * (1 - 0.5*hourShare)
	return math.Round(activity*quality*fairness*1e4) / 1e4
}

func clamp01(x float64) float64 { return max(0, min(1, x)) }

// MarketplaceAnalytics is the body of GET /__platform/analytics.
type MarketplaceAnalytics struct {
	Window      Window         `json:"window"`
	GeneratedAt time.Time      `json:"generatedAt"`
	Hero        Hero           `json:"hero"`
	TopAPIs     []TopAPI       `json:"topApis"`
	Directories []DirectoryRow `json:"directories"`
}

// Hero holds the headline figures of a window.
type Hero struct {
	// ActiveAgents counts distinct caller ids with at least one call.
	ActiveAgents int `json:"activeAgents"`
	// PublishedAPIs counts published APIs plus those seen in the window.
	PublishedAPIs int `json:"publishedApis"`
	// Directories counts the directories of those APIs.
	Directories int    `json:"directories"`
	Calls       int64  `json:"calls"`
	RevenueUSD  string `json:"revenueUsd"`
}

// TopAPI is one row of the trending leaderboard.
//
// uniqueCallers is the API's audience as callers describe themselves:
// distinct caller ids (the payer for paid calls, else X-Agent-Id and the
// other identity sources), which a caller can rotate at will, so it is
// informative, not trusted. uniqueSources and maxSourceShare are what the
// score uses: distinct verified payers of paid calls plus distinct client
// networks (/24, /48) of free calls, and the busiest one's share.
// maxCallerShare is the busiest caller id's share.
type TopAPI struct {
	Rank           int     `json:"rank"`
	APIID          string  `json:"apiId"`
	Directory      string  `json:"directory"`
	Owner          string  `json:"owner,omitempty"`
	Calls          int64   `json:"calls"`
	UniqueCallers  int     `json:"uniqueCallers"`
	UniqueSources  int     `json:"uniqueSources"`
	RevenueUSD     string  `json:"revenueUsd"`
	ErrorRate      float64 `json:"errorRate"`
	P95LatencyMs   int64   `json:"p95LatencyMs"`
	Score          float64 `json:"score"`
	Errors         int64   `json:"errors"`
	MaxCallerShare float64 `json:"maxCallerShare"`
	MaxSourceShare float64 `json:"maxSourceShare"`
	MaxHourShare   float64 `json:"maxHourShare"`
	ActiveHours    int     `json:"activeHours"`
}

// DirectoryRow is one directory's rollup in the analytics body.
type DirectoryRow struct {
	Directory     string  `json:"directory"`
	APIs          int     `json:"apis"`
	Calls         int64   `json:"calls"`
	UniqueCallers int     `json:"uniqueCallers"`
	RevenueUSD    string  `json:"revenueUsd"`
	ErrorRate     float64 `json:"errorRate"`
	// TopAPIID is the directory's best-ranked API, empty without calls.
	TopAPIID string `json:"topApiId"`
}

// AnalyticsOptions parameterise BuildMarketplaceAnalytics.
type AnalyticsOptions struct {
	// Window is required.
	Window Window
	// Top bounds the leaderboard; 0 means DefaultTop, at most MaxTop.
	Top int
	// Now is the time the window is computed at (injected clock).
	Now time.Time
	// Published lists the published APIs; may be nil.
	Published []APIInfo
}

// BuildMarketplaceAnalytics reads the window's rollups from store and
// builds the analytics body. Its cost grows with the number of (API, hour)
// rollups in the window and their distinct callers, never with the number
// of raw events.
func BuildMarketplaceAnalytics(ctx context.Context, store Store, opt AnalyticsOptions) (*MarketplaceAnalytics, error) {
	if opt.Window == "" {
		return nil, fmt.Errorf("%w: window is required", ErrInvalidQuery)
	}
	if _, err := ParseWindow(string(opt.Window)); err != nil {
		return nil, err
	}
	b, err := newSnapshotBuilder(opt.Window, opt.Now)
	if err != nil {
		return nil, err
	}
	q := opt.Window.Range(opt.Now)
	if sc, ok := store.(RollupScanner); ok {
		err = sc.ScanRollups(ctx, q, b.add)
	} else {
		var rollups []HourRollup
		rollups, err = store.Rollups(ctx, q)
		for i := range rollups {
			b.add(&rollups[i])
		}
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: analytics: %w", err)
	}
	return b.finish(opt.Published).Analytics(opt.Now, opt.Top), nil
}

// Ranked returns the APIs with at least one call, best first, with their
// scores. Ranking is by score, then calls, unique sources and revenue (all
// descending), then APIID ascending, so ties always break the same way.
func (s *WindowSnapshot) Ranked() []TopAPI {
	rows := make([]TopAPI, 0, len(s.APIs))
	revenue := make(map[string]int64, len(s.APIs))
	for i := range s.APIs {
		a := &s.APIs[i]
		if a.Calls == 0 {
			continue
		}
		revenue[a.APIID] = a.RevenueMicros
		rows = append(rows, TopAPI{
			APIID: a.APIID, Directory: a.Directory, Owner: a.Owner,
			Calls: a.Calls, UniqueCallers: a.UniqueCallers, UniqueSources: a.UniqueSources,
			RevenueUSD:     MicrosToUSD(a.RevenueMicros),
			ErrorRate:      round4(a.ErrorRate()),
			P95LatencyMs:   a.P95LatencyMs(),
			Score:          ComputeTrendingScore(a.ScoreInputs()),
			Errors:         a.Errors,
			MaxCallerShare: round4(a.MaxCallerShare()),
			MaxSourceShare: round4(a.MaxSourceShare()),
			MaxHourShare:   round4(a.MaxHourShare()),
			ActiveHours:    a.ActiveHours,
		})
	}
	slices.SortFunc(rows, func(x, y TopAPI) int {
		return cmp.Or(
			cmp.Compare(y.Score, x.Score),
			cmp.Compare(y.Calls, x.Calls),
			cmp.Compare(y.UniqueSources, x.UniqueSources),
			cmp.Compare(revenue[y.APIID], revenue[x.APIID]),
			strings.Compare(x.APIID, y.APIID),
		)
	})
	for i := range rows {
		rows[i].Rank = i + 1
	}
	return rows
}

// Analytics turns the snapshot into the analytics body with at most top
// leaderboard rows (0 means DefaultTop; clamped to MaxTop). Directories are
// ordered by calls, then revenue (descending), then name.
func (s *WindowSnapshot) Analytics(now time.Time, top int) *MarketplaceAnalytics {
	if top <= 0 {
		top = DefaultTop
	}
	top = min(top, MaxTop)
	ranked := s.Ranked()
	best := map[string]string{}
	for _, r := range ranked {
		if _, ok := best[r.Directory]; !ok {
			best[r.Directory] = r.APIID
		}
	}
	out := &MarketplaceAnalytics{
		Window:      s.Window,
		GeneratedAt: now.UTC(),
		Hero: Hero{
			ActiveAgents:  s.ActiveCallers,
			PublishedAPIs: len(s.APIs),
			Directories:   len(s.Directories),
			Calls:         s.Calls,
			RevenueUSD:    MicrosToUSD(s.RevenueMicros),
		},
		TopAPIs:     ranked[:min(top, len(ranked))],
		Directories: make([]DirectoryRow, 0, len(s.Directories)),
	}
	for _, d := range s.Directories {
		out.Directories = append(out.Directories, DirectoryRow{
			Directory: d.Directory, APIs: d.APIs, Calls: d.Calls,
			UniqueCallers: d.UniqueCallers, RevenueUSD: MicrosToUSD(d.RevenueMicros),
			ErrorRate: round4(ratio(d.Errors, d.Calls)), TopAPIID: best[d.Directory],
		})
	}
	revenue := map[string]int64{}
	for _, d := range s.Directories {
		revenue[d.Directory] = d.RevenueMicros
	}
	slices.SortFunc(out.Directories, func(x, y DirectoryRow) int {
		return cmp.Or(
			cmp.Compare(y.Calls, x.Calls),
			cmp.Compare(revenue[y.Directory], revenue[x.Directory]),
			strings.Compare(x.Directory, y.Directory),
		)
	})
	return out
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
