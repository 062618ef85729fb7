package metrics_test

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
)

func TestCallerSetExactUpToLimit(t *testing.T) {
	t.Parallel()
	var s metrics.CallerSet
	require.Zero(t, s.Distinct())
	require.Zero(t, s.MaxCalls())
	for i := range metrics.ExactCallers {
		s.Add(metrics.HashCaller(fmt.Sprint("c", i)), int64(1+i%3))
	}
	s.Add(metrics.HashCaller("c7"), 10)
	require.True(t, s.Exact())
	require.Equal(t, metrics.ExactCallers, s.Distinct())
	require.EqualValues(t, 12, s.MaxCalls(), "c7 had 2 calls, then 10 more")
	counts, ok := s.Counts()
	require.True(t, ok)
	require.Len(t, counts, metrics.ExactCallers)

	// One more id: the set becomes a sketch, and stays bounded.
	s.Add(metrics.HashCaller("one-too-many"), 1)
	require.False(t, s.Exact())
	_, ok = s.Counts()
	require.False(t, ok)
	require.InDelta(t, metrics.ExactCallers+1, s.Distinct(), 10)
	require.EqualValues(t, 12, s.MaxCalls(), "the busiest id survives as a heavy hitter")
	require.LessOrEqual(t, s.Entries(), metrics.HeavyHitters)
}

// TestCallerSetBoundedAt300kCallers is the security finding: one hour of
// one API with 300,000 distinct callers used to keep 300,000 map entries.
// The set now holds at most HeavyHitters ids and a 16 KB sketch, and its
// estimate stays within 2%.
func TestCallerSetBoundedAt300kCallers(t *testing.T) {
	t.Parallel()
	const n = 300_000
	var s metrics.CallerSet
	for i := range n {
		s.Add(metrics.HashCaller(fmt.Sprint("agent-", i)), 1)
		if i%1000 == 0 {
			require.LessOrEqual(t, s.Entries(), metrics.ExactCallers)
		}
	}
	require.LessOrEqual(t, s.Entries(), metrics.HeavyHitters)
	t.Logf("300,000 callers: estimate %d (%+.2f%%)", s.Distinct(), 100*(float64(s.Distinct())/n-1))
	require.InEpsilon(t, n, s.Distinct(), 0.02)
	b := s.AppendBinary(nil)
	require.Less(t, len(b), 20_000, "stored form stays small")
}

// TestCallerSetUnionAcrossHours checks the window figure: hourly sets,
// some sketched and some exact, overlapping, merge into an estimate of the
// distinct ids of the whole window within a few percent.
func TestCallerSetUnionAcrossHours(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                 string
		hours, perHour, step int
	}{
		{"all exact, union sketched", 48, 900, 600},        // 29,100 distinct
		{"all sketched, heavy overlap", 24, 20_000, 5_000}, // 135,000 distinct
		{"mixed", 30, 3_000, 3_000},                        // 90,000 distinct, no overlap
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var window metrics.CallerSet
			for h := range tc.hours {
				var hour metrics.CallerSet
				for i := range tc.perHour {
					hour.Add(metrics.HashCaller(fmt.Sprint("id-", h*tc.step+i)), 1)
				}
				window.Merge(&hour)
			}
			want := (tc.hours-1)*tc.step + tc.perHour
			t.Logf("distinct %d, estimate %d (%+.2f%%)", want, window.Distinct(), 100*(float64(window.Distinct())/float64(want)-1))
			require.InEpsilon(t, want, window.Distinct(), 0.03, "want %d", want)
		})
	}
}

func TestCallerSetHeavyHitterAfterSketch(t *testing.T) {
	t.Parallel()
	// One source makes 40% of 10,000 calls among 6,000 others.
	var s metrics.CallerSet
	for i := range 10_000 {
		id := "spammer"
		if i%5 >= 2 {
			id = fmt.Sprint("other-", i%6000)
		}
		s.Add(id, 1)
	}
	require.False(t, s.Exact())
	require.InDelta(t, 4000, s.MaxCalls(), 10_000/metrics.HeavyHitters)

	// Merged with another sketched hour where it is busy again.
	var other metrics.CallerSet
	for i := range 5000 {
		other.Add(fmt.Sprint("late-", i), 1)
	}
	other.Add("spammer", 3000)
	s.Merge(&other)
	require.InDelta(t, 7000, s.MaxCalls(), 15_000/metrics.HeavyHitters)
}

func TestCallerSetBinaryRoundTrip(t *testing.T) {
	t.Parallel()
	sets := map[string]func() metrics.CallerSet{
		"empty": func() metrics.CallerSet { return metrics.CallerSet{} },
		"exact": func() metrics.CallerSet {
			var s metrics.CallerSet
			s.Add(metrics.HashCaller("a"), 3)
			s.Add("raw id, not a hash", 2)
			s.Add(metrics.HashClientNet(netip.MustParseAddr("2001:db8::1")), 1)
			// Shaped like hashes but not lower-case hex: stored raw.
			s.Add(strings.ToUpper(metrics.HashCaller("b")), 1)
			s.Add(metrics.HashCaller("c")[:33]+"g", 1)
			return s
		},
		"sparse sketch": func() metrics.CallerSet {
			var s metrics.CallerSet
			for i := range 2000 {
				s.Add(metrics.HashCaller(fmt.Sprint(i)), int64(i%7+1))
			}
			return s
		},
		"dense sketch": func() metrics.CallerSet {
			var s metrics.CallerSet
			for i := range 100_000 {
				s.Add(fmt.Sprint("x", i), 1)
			}
			return s
		},
	}
	for name, mk := range sets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := mk()
			b, err := s.MarshalBinary()
			require.NoError(t, err)
			var back metrics.CallerSet
			require.NoError(t, back.UnmarshalBinary(b))
			require.True(t, s.Equal(&back))
			require.Equal(t, s.Distinct(), back.Distinct())
			require.Equal(t, s.MaxCalls(), back.MaxCalls())
			require.Equal(t, b, back.AppendBinary(nil), "canonical form")

			text, err := s.MarshalText()
			require.NoError(t, err)
			var fromText metrics.CallerSet
			require.NoError(t, fromText.UnmarshalText(text))
			require.True(t, s.Equal(&fromText))

			c := s.Clone()
			c.Add("something new", 1)
			require.True(t, s.Equal(&back), "a clone shares nothing")
		})
	}
}

// A hashed id ("c_" and 32 lower-case hex digits) is stored in 18 bytes,
// anything else as it is.
func TestCallerSetHashedIDsCompact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id   string
		size int // of the encoded set: format, count, id, calls
	}{
		{metrics.HashCaller("a"), 1 + 1 + 18 + 1},
		{metrics.HashClientNet(netip.MustParseAddr("192.0.2.1")), 1 + 1 + 18 + 1},
		{strings.ToUpper(metrics.HashCaller("a")), 1 + 1 + 1 + 1 + 34 + 1},
		{metrics.HashCaller("a")[:33] + "g", 1 + 1 + 1 + 1 + 34 + 1},
		{"raw", 1 + 1 + 1 + 1 + 3 + 1},
	} {
		var s metrics.CallerSet
		s.Add(tc.id, 1)
		b := s.AppendBinary(nil)
		require.Len(t, b, tc.size, tc.id)
		var back metrics.CallerSet
		require.NoError(t, back.UnmarshalBinary(b))
		require.True(t, s.Equal(&back), tc.id)
	}
}

func TestCallerSetRejectsCorruptInput(t *testing.T) {
	t.Parallel()
	var good metrics.CallerSet
	good.Add("a", 1)
	ok := good.AppendBinary(nil)
	for name, b := range map[string][]byte{
		"unknown format":  {9},
		"zero count":      {1, 0},
		"truncated":       ok[:len(ok)-1],
		"trailing":        append(append([]byte{}, ok...), 0),
		"short registers": {2, 0, 0},
		"bad rank":        append([]byte{3, 1, 1, 200}, 0),
		"too many heavy":  append(append([]byte{3, 0}, 0xff, 0x01), 0),
	} {
		var s metrics.CallerSet
		err := s.UnmarshalBinary(b)
		require.ErrorIs(t, err, metrics.ErrCorruptCallerSet, name)
		require.Zero(t, s.Distinct(), name)
	}
}

func FuzzCallerSetUnmarshal(f *testing.F) {
	var exact, sketch metrics.CallerSet
	exact.Add(metrics.HashCaller("a"), 2)
	exact.Add("b", 1)
	for i := range 3000 {
		sketch.Add(fmt.Sprint(i), 1)
	}
	f.Add(exact.AppendBinary(nil))
	f.Add(sketch.AppendBinary(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s metrics.CallerSet
		if err := s.UnmarshalBinary(b); err != nil {
			require.ErrorIs(t, err, metrics.ErrCorruptCallerSet)
			return
		}
		// Whatever decodes behaves: it re-encodes to something that decodes
		// to the same set, and merges without panicking.
		var back metrics.CallerSet
		require.NoError(t, back.UnmarshalBinary(s.AppendBinary(nil)))
		require.True(t, s.Equal(&back))
		d := s.Distinct()
		require.False(t, math.IsNaN(float64(d)))
		require.GreaterOrEqual(t, d, 0)
		var m metrics.CallerSet
		m.Add("z", 1)
		m.Merge(&s)
		_ = m.Distinct()
	})
}

func TestHashClientNet(t *testing.T) {
	t.Parallel()
	net := func(s string) string { return metrics.HashClientNet(netip.MustParseAddr(s)) }
	require.Equal(t, net("203.0.113.1"), net("203.0.113.254"), "one /24")
	require.Equal(t, net("203.0.113.9"), net("::ffff:203.0.113.77"), "IPv4-mapped IPv6 is IPv4")
	require.NotEqual(t, net("203.0.113.1"), net("203.0.112.1"))
	require.Equal(t, net("2001:db8:1::1"), net("2001:db8:1:ffff::2"), "one /48")
	require.Equal(t, net("fe80::1%eth0"), net("fe80::2"), "zones are ignored")
	require.NotEqual(t, net("2001:db8:1::1"), net("2001:db8:2::1"))
	require.Regexp(t, `^n_[0-9a-f]{32}$`, net("192.0.2.1"))
	unknown := metrics.HashClientNet(netip.Addr{})
	require.Regexp(t, `^n_[0-9a-f]{32}$`, unknown)
	require.NotEqual(t, net("0.0.0.0"), unknown)

	require.Equal(t, metrics.HashCaller("payer:0xabc"), metrics.HashPayer(" 0xABC "), "the payment stage's caller id")
	require.Empty(t, metrics.HashPayer(""))
}

func TestUsageEventSource(t *testing.T) {
	t.Parallel()
	e := metrics.UsageEvent{CallerID: "c_id", ClientNet: "n_net", Payer: "c_payer", Billable: true}
	require.Equal(t, "c_payer", e.Source(), "a settled payment's payer")
	e.Billable = false
	require.Equal(t, "n_net", e.Source(), "an unpaid call counts by network, even with a payer")
	e.ClientNet = ""
	require.Equal(t, "c_id", e.Source(), "events without network fall back to the caller id")
}

func TestCallerSetSaturatedSketch(t *testing.T) {
	t.Parallel()
	// A crafted dense sketch with every register at its maximum rank.
	b := []byte{2}
	for range 1 << metrics.HLLPrecision {
		b = append(b, 64-metrics.HLLPrecision+1)
	}
	b = append(b, 0)
	var s metrics.CallerSet
	require.NoError(t, s.UnmarshalBinary(b))
	require.Equal(t, 1<<53, s.Distinct())
}
