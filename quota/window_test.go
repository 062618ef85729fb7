package quota

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/tenant"
)

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func TestDayWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		at         time.Time
		id         string
		start, end time.Time
	}{
		{date(2026, 11, 24), "2026-11-24", date(2026, 11, 24), date(2026, 11, 25)},
		{date(2026, 11, 24).Add(24*time.Hour - time.Nanosecond), "2026-11-24", date(2026, 11, 24), date(2026, 11, 25)},
		{date(2026, 12, 31).Add(23 * time.Hour), "2026-12-31", date(2026, 12, 31), date(2027, 1, 1)},
		{date(2028, 2, 28).Add(time.Hour), "2028-02-28", date(2028, 2, 28), date(2028, 2, 29)},
		{date(2028, 2, 29), "2028-02-29", date(2028, 2, 29), date(2028, 3, 1)},
		{date(2027, 2, 28).Add(time.Hour), "2027-02-28", date(2027, 2, 28), date(2027, 3, 1)},
		{date(1969, 12, 31).Add(time.Hour), "1969-12-31", date(1969, 12, 31), date(1970, 1, 1)},
		{date(999, 1, 2), "0999-01-02", date(999, 1, 2), date(999, 1, 3)},
		// Another zone: the UTC day counts, not the local one.
		{time.Date(2026, 11, 25, 1, 0, 0, 0, time.FixedZone("CET", 3600)), "2026-11-25", date(2026, 11, 25), date(2026, 11, 26)},
		{time.Date(2026, 11, 25, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "2026-11-24", date(2026, 11, 24), date(2026, 11, 25)},
	}
	for _, tc := range tests {
		w := DayWindow(tc.at)
		require.Equal(t, Window{Kind: Day, ID: tc.id, Start: tc.start, End: tc.end}, w, "%s", tc.at)
	}
}

func TestMonthWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		at         time.Time
		id         string
		start, end time.Time
	}{
		{date(2026, 11, 24), "2026-11", date(2026, 11, 1), date(2026, 12, 1)},
		{date(2026, 11, 1), "2026-11", date(2026, 11, 1), date(2026, 12, 1)},
		{date(2026, 12, 1).Add(-time.Nanosecond), "2026-11", date(2026, 11, 1), date(2026, 12, 1)},
		{date(2026, 12, 31), "2026-12", date(2026, 12, 1), date(2027, 1, 1)},
		{date(2027, 1, 31), "2027-01", date(2027, 1, 1), date(2027, 2, 1)},
		{date(2027, 2, 28), "2027-02", date(2027, 2, 1), date(2027, 3, 1)},
		{date(2028, 2, 29), "2028-02", date(2028, 2, 1), date(2028, 3, 1)},
		{date(2100, 2, 28), "2100-02", date(2100, 2, 1), date(2100, 3, 1)}, // 2100 is not a leap year
		{date(2000, 2, 29), "2000-02", date(2000, 2, 1), date(2000, 3, 1)}, // 2000 is
		{date(2027, 4, 30), "2027-04", date(2027, 4, 1), date(2027, 5, 1)},
	}
	for _, tc := range tests {
		w := MonthWindow(tc.at)
		require.Equal(t, Window{Kind: Month, ID: tc.id, Start: tc.start, End: tc.end}, w, "%s", tc.at)
	}
}

func TestCalendarCache(t *testing.T) {
	t.Parallel()
	l := &Limiter{}
	for _, at := range []time.Time{
		date(2026, 11, 24).Add(12 * time.Hour),
		date(2026, 11, 24).Add(24*time.Hour - time.Microsecond),
		date(2026, 11, 25),
		date(2026, 11, 24), // the clock went back
		date(1969, 12, 31).Add(time.Hour),
		date(2026, 11, 30).Add(23 * time.Hour),
	} {
		c := l.calendarAt(at, at.UnixMicro())
		require.Equal(t, DayWindow(at), c.day, "%s", at)
		require.Equal(t, MonthWindow(at), c.month, "%s", at)
		require.Equal(t, c.day.End.UnixMicro(), c.dayEndUS)
		require.Equal(t, c.month.End.Unix(), c.monthEndUnix)
	}
}

func TestRounding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want int64
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Millisecond, 1},
		{time.Second, 1}, {time.Second + time.Nanosecond, 2}, {1200 * time.Millisecond, 2},
		{24 * time.Hour, 86400}, {24*time.Hour + time.Millisecond, 86401},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, ceilDuration(tc.d), "%s", tc.d)
	}
	require.Equal(t, int64(10), ceilUnix(10_000_000))
	require.Equal(t, int64(11), ceilUnix(10_000_001))
	require.Equal(t, int64(11), ceilUnix(10_999_999))
}

func TestGCRAArithmetic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		rate            tenant.Rate
		limit, t, burst int64
		ttl             time.Duration
	}{
		{"60 per minute", tenant.Rate{Requests: 60, WindowSeconds: 60}, 60, 1_000_000, 60_000_000, 61 * time.Second},
		{"50 per minute", tenant.Rate{Requests: 50, WindowSeconds: 60}, 50, 1_200_000, 60_000_000, 61 * time.Second},
		// 7 per minute does not divide: T rounds down, burst is 7·T so
		// exactly 7 fit.
		{"7 per minute", tenant.Rate{Requests: 7, WindowSeconds: 60}, 7, 8_571_428, 59_999_996, 61 * time.Second},
		{"1 per day", tenant.Rate{Requests: 1, WindowSeconds: 86400}, 1, 86_400_000_000, 86_400_000_000, 86401 * time.Second},
		{"more than one per µs", tenant.Rate{Requests: 5_000_000, WindowSeconds: 1}, 1_000_000, 1, 1_000_000, 2 * time.Second},
		{"huge window", tenant.Rate{Requests: 1, WindowSeconds: 1 << 40}, 1, maxRateWindow * 1_000_000, maxRateWindow * 1_000_000, (maxRateWindow + 1) * time.Second},
	}
	for _, tc := range tests {
		g := newGCRA(tc.rate)
		require.Equal(t, gcra{limit: tc.limit, t: tc.t, burst: tc.burst, ttl: tc.ttl}, g, tc.name)
		// Exactly limit fit in a burst from an empty counter.
		const now = int64(1_800_000_000_000_000)
		tat := int64(0)
		admitted := int64(0)
		for i := int64(0); i < min(tc.limit, 1000)+1; i++ {
			in := g.incr(now)
			n := max(tat, in.Floor) + in.Delta
			if n > in.Max {
				break
			}
			tat = n
			admitted++
		}
		require.Equal(t, min(tc.limit, 1000+1), admitted, tc.name)
	}

	g := newGCRA(tenant.Rate{Requests: 4, WindowSeconds: 4}) // T = 1s
	const now = int64(100_000_000)
	tests2 := []struct {
		tat             int64
		remaining, wait int64
	}{
		{0, 4, 0},                       // never used
		{now - 5_000_000, 4, 0},         // long idle
		{now, 4, 0},                     // just restored
		{now + 1_000_000, 3, 0},         // one used
		{now + 3_000_000, 1, 0},         // one left
		{now + 3_500_000, 0, 500_000},   // half a unit left: none now, one in T/2
		{now + 4_000_000, 0, 1_000_000}, // full: one more in T
		{now + 3_999_999, 0, 999_999},
	}
	for _, tc := range tests2 {
		require.Equal(t, tc.remaining, g.remaining(now, tc.tat), "tat %d", tc.tat)
		require.Equal(t, tc.wait, g.wait(now, tc.tat), "tat %d", tc.tat)
	}
}

func TestMoney(t *testing.T) {
	t.Parallel()
	d := decimal.RequireFromString
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"0", 0, false}, {"0.000001", 1, false}, {"1.5", 1_500_000, false}, {"10", 10_000_000, false},
		{"0.0000001", 0, true}, {"-0.01", 0, true}, {"99999999999999999", 0, true},
	} {
		got, err := MicroUSD(d(tc.in))
		if tc.bad {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
		require.True(t, USD(got).Equal(d(tc.in)), tc.in)
	}
	require.Equal(t, "10", formatUSD(10_000_000))
	require.Equal(t, "0.25", formatUSD(250_000))
	require.Equal(t, "0.000001", formatUSD(1))
	require.Equal(t, "0", formatUSD(0))
	require.Equal(t, "1234.5", formatUSD(1_234_500_000))

	require.Equal(t, int64(0), capMicro(decimal.Zero))
	require.Equal(t, int64(0), capMicro(d("-5")))
	require.Equal(t, int64(1), capMicro(d("0.0000019")), "caps round down")
	require.Equal(t, int64(5_000_000), capMicro(d("5")))
	require.Equal(t, int64(1<<63-1), capMicro(d("1e20")))
}
