package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// observation is what the harness saw of one request it sent.
type observation struct {
	Start, End time.Time
	Tenant     string
	Scenario   string
	Outcome    string // see classify
	Status     int    // 0 for a transport error
	Paid       bool   // the request carried a payment
	AuthKey    string // idempotency key the gateway derives from the payment, if any
	TxHash     string // transaction of a successful settle response
	Deduped    bool   // X-Payment-Deduped: true
	Err        string // transport error
}

func (o observation) latency() time.Duration { return o.End.Sub(o.Start) }

// served reports whether the request was answered 2xx by the worker in this
// request (replays are answered from the idempotency record and consume no
// quota, so they are not "served").
func (o observation) served() bool { return o.Status >= 200 && o.Status < 300 && !o.Deduped }

// recorder collects observations and running counts.
type recorder struct {
	mu     sync.Mutex
	obs    []observation
	counts map[string]int64
}

func newRecorder() *recorder { return &recorder{counts: map[string]int64{}} }

func (r *recorder) add(o observation) {
	r.mu.Lock()
	r.obs = append(r.obs, o)
	r.counts[o.Outcome]++
	r.mu.Unlock()
}

func (r *recorder) snapshot() (total int64, counts map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	counts = make(map[string]int64, len(r.counts))
	for k, v := range r.counts {
		counts[k] = v
		total += v
	}
	return total, counts
}

func (r *recorder) observations() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.obs)
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value such that at least p% of the
// values are at or below it. It returns 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// outcomeStats are the latency figures of one outcome.
type outcomeStats struct {
	Outcome            string
	Count              int
	P50, P95, P99, Max time.Duration
}

// summarize groups observations by outcome, sorted by outcome name.
func summarize(obs []observation) []outcomeStats {
	by := map[string][]time.Duration{}
	for _, o := range obs {
		by[o.Outcome] = append(by[o.Outcome], o.latency())
	}
	out := make([]outcomeStats, 0, len(by))
	for k, ds := range by {
		slices.Sort(ds)
		out = append(out, outcomeStats{Outcome: k, Count: len(ds),
			P50: percentile(ds, 50), P95: percentile(ds, 95), P99: percentile(ds, 99), Max: ds[len(ds)-1]})
	}
	sort.Slice(out, func(i, j int) bool { return outcomeOrder(out[i].Outcome) < outcomeOrder(out[j].Outcome) })
	return out
}

// outcomeOrder sorts outcomes: successes, then by status code, then name.
func outcomeOrder(o string) string {
	switch o {
	case outServed:
		return "0a"
	case outPaid:
		return "0b"
	case outReplayed:
		return "0c"
	case outConnError:
		return "9" + o
	}
	return "1" + o
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// printSummary writes the end-of-run table.
func printSummary(w io.Writer, obs []observation, elapsed time.Duration) {
	st := summarize(obs)
	var all []time.Duration
	for _, o := range obs {
		all = append(all, o.latency())
	}
	slices.Sort(all)
	secs := elapsed.Seconds()
	if secs <= 0 {
		secs = 1
	}
	fmt.Fprintf(w, "\n%-36s %8s %8s %9s %9s %9s %9s\n", "outcome", "count", "req/s", "p50", "p95", "p99", "max")
	for _, s := range st {
		fmt.Fprintf(w, "%-36s %8d %8.1f %9s %9s %9s %9s\n", s.Outcome, s.Count, float64(s.Count)/secs, ms(s.P50), ms(s.P95), ms(s.P99), ms(s.Max))
	}
	if len(all) > 0 {
		fmt.Fprintf(w, "%-36s %8d %8.1f %9s %9s %9s %9s\n", "ALL", len(all), float64(len(all))/secs,
			ms(percentile(all, 50)), ms(percentile(all, 95)), ms(percentile(all, 99)), ms(all[len(all)-1]))
	}
}

// progressLine is the once-a-second line: elapsed, rate over the last
// interval, and the outcome counts so far in a compact form.
func progressLine(elapsed time.Duration, rps float64, total int64, counts map[string]int64) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return outcomeOrder(keys[i]) < outcomeOrder(keys[j]) })
	var b strings.Builder
	fmt.Fprintf(&b, "[%5.1fs] %7.1f req/s  total %d |", elapsed.Seconds(), rps, total)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", strings.ReplaceAll(k, " ", ":"), counts[k])
	}
	return b.String()
}
