package metrics

import (
	"math"
	"sort"
)

// latencyBounds are the inclusive upper bounds, in milliseconds, of the
// latency histogram's buckets; a last, unbounded bucket follows. They are
// part of the storage format of SQL adapters: append only.
var latencyBounds = [...]int64{
	5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750,
	1000, 1500, 2000, 3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 60000,
}

// LatencyBuckets is the number of buckets of a LatencyHistogram.
const LatencyBuckets = len(latencyBounds) + 1

// LatencyHistogram counts latencies in fixed buckets. Fixed buckets make it
// mergeable by plain addition, so per-hour histograms add up to a window's
// and a SQL adapter can keep one counter column (or row) per bucket. The
// zero value is an empty histogram.
type LatencyHistogram [LatencyBuckets]int64

// LatencyBucket returns the index of the bucket a latency falls into.
func LatencyBucket(ms int64) int {
	return sort.Search(len(latencyBounds), func(i int) bool { return ms <= latencyBounds[i] })
}

// LatencyBucketBound returns the upper bound in milliseconds of bucket i;
// for the last, unbounded bucket it returns the last finite bound.
func LatencyBucketBound(i int) int64 {
	if i >= len(latencyBounds) {
		return latencyBounds[len(latencyBounds)-1]
	}
	return latencyBounds[i]
}

// Observe counts one latency.
func (h *LatencyHistogram) Observe(ms int64) { h[LatencyBucket(ms)]++ }

// Merge adds o's counts to h.
func (h *LatencyHistogram) Merge(o *LatencyHistogram) {
	for i, n := range o {
		h[i] += n
	}
}

// Count returns the number of observations.
func (h *LatencyHistogram) Count() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Quantile returns an upper estimate of the q-quantile (0 < q <= 1) in
// milliseconds: the upper bound of the bucket holding the ceil(q*n)-th
// smallest observation. An empty histogram gives 0.
func (h *LatencyHistogram) Quantile(q float64) int64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	// The epsilon keeps 0.95*20 at rank 19 despite binary rounding.
	rank := int64(math.Ceil(q*float64(n) - 1e-9))
	rank = max(1, min(rank, n))
	var seen int64
	for i, c := range h {
		seen += c
		if seen >= rank {
			return LatencyBucketBound(i)
		}
	}
	return LatencyBucketBound(LatencyBuckets - 1)
}
