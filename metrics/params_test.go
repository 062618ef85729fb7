package metrics_test

import (
	"net/url"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
)

func TestParseEventsParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		query string
		want  int
		ok    bool
	}{
		{"", 100, true},
		{"limit=", 100, true},
		{"limit=1", 1, true},
		{"limit=250", 250, true},
		{"limit=1000", 1000, true},
		{"limit=1001", 1000, true},
		{"limit=99999999999999999999", 1000, true},
		{"limit=0", 0, false},
		{"limit=000", 0, false},
		{"limit=-5", 0, false},
		{"limit=+5", 0, false},
		{"limit=5.0", 0, false},
		{"limit=1e3", 0, false},
		{"limit=%205", 0, false},
		{"limit=abc", 0, false},
		{"limit=1&limit=2", 0, false},
		{"other=1", 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			v, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			got, err := metrics.ParseEventsParams(v)
			if !tc.ok {
				require.ErrorIs(t, err, metrics.ErrInvalidQuery)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseAnalyticsParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		query  string
		window metrics.Window
		top    int
		ok     bool
	}{
		{"", metrics.WindowToday, 25, true},
		{"window=today", metrics.WindowToday, 25, true},
		{"window=week&top=10", metrics.WindowWeek, 10, true},
		{"window=overall&top=100", metrics.WindowOverall, 100, true},
		{"window=overall&top=101", metrics.WindowOverall, 100, true},
		{"window=month", "", 0, false},
		{"window=Today", "", 0, false},
		{"window=today&window=week", "", 0, false},
		{"top=0", "", 0, false},
		{"top=-1", "", 0, false},
		{"top=ten", "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			v, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			w, top, err := metrics.ParseAnalyticsParams(v)
			if !tc.ok {
				require.ErrorIs(t, err, metrics.ErrInvalidQuery)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.window, w)
			require.Equal(t, tc.top, top)
		})
	}
}

// FuzzPlatformQuery feeds arbitrary query strings (untrusted input) to both
// parsers: they must never panic, and whatever they accept is in range.
func FuzzPlatformQuery(f *testing.F) {
	for _, s := range []string{"", "limit=10", "window=week&top=5", "limit=-1", "top=1e9", "window=%00", "limit=0010", "top=99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if limit, err := metrics.ParseEventsParams(v); err == nil {
			if limit < 1 || limit > metrics.MaxEventsLimit {
				t.Fatalf("limit %d out of range for %q", limit, raw)
			}
			if s := v.Get("limit"); s != "" {
				if n, err := strconv.Atoi(s); err == nil && n <= metrics.MaxEventsLimit && n != limit {
					t.Fatalf("limit %d != %d for %q", limit, n, raw)
				}
			}
		}
		if w, top, err := metrics.ParseAnalyticsParams(v); err == nil {
			if top < 1 || top > metrics.MaxTop {
				t.Fatalf("top %d out of range for %q", top, raw)
			}
			if _, err := metrics.ParseWindow(string(w)); err != nil || w == "" {
				t.Fatalf("window %q accepted for %q", w, raw)
			}
		}
	})
}
