package ops

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMetricsBearerToken(t *testing.T) {
	t.Parallel()
	for h, want := range map[string]string{
		"Bearer abc":     "abc",
		"bearer abc":     "abc",
		"BeArEr \t abc":  "abc",
		"Bearer a.b-c_d": "a.b-c_d",
	} {
		got, ok := metricsBearerToken(h)
		require.True(t, ok, h)
		require.Equal(t, want, got, h)
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "Bearer  ", "Bearerabc", "Basic abc", "Bearer a b", "Bearer abc\n", "Bear abc", "Bearer\u00a0abc"} {
		_, ok := metricsBearerToken(h)
		require.False(t, ok, "%q", h)
	}
}

// FuzzMetricsBearerToken: the Authorization header is untrusted input. The
// parser never panics, a token it returns is non-empty and free of white
// space, and "Bearer " followed by such a token always gives that token
// back.
func FuzzMetricsBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer x", "Bearer", "Basic abc", "Bearer a b", "BEARER\tz", "\x00", "Bearer \xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := metricsBearerToken(h)
		if !ok {
			require.Empty(t, tok)
			return
		}
		require.NotEmpty(t, tok)
		require.False(t, strings.ContainsAny(tok, " \t\r\n"))
		require.True(t, strings.HasSuffix(h, tok))
		require.True(t, strings.EqualFold(h[:6], "bearer"))
		again, ok := metricsBearerToken("Bearer " + tok)
		require.True(t, ok)
		require.Equal(t, tok, again)
	})
}

// Many goroutines offering distinct values admit exactly max of them;
// every caller of an admitted value gets the value back, every other
// caller "other".
func TestLabelSetAdmitsExactlyMaxUnderConcurrency(t *testing.T) {
	t.Parallel()
	s := newLabelSet([]string{"known"}, 50, 32, isLabelToken)
	const workers, values = 16, 400
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < values; i++ {
				got[g] = append(got[g], s.value(fmt.Sprintf("v%d", (i*7+g)%values)))
			}
			require.Equal(t, "known", s.value("known"))
		}()
	}
	wg.Wait()
	admitted := map[string]bool{}
	for _, vs := range got {
		for _, v := range vs {
			if v != LabelOther {
				admitted[v] = true
			}
		}
	}
	require.Len(t, admitted, 50)
	// Once admitted, always admitted; once refused, always refused.
	for i := 0; i < values; i++ {
		v := fmt.Sprintf("v%d", i)
		if admitted[v] {
			require.Equal(t, v, s.value(v))
		} else {
			require.Equal(t, LabelOther, s.value(v))
		}
	}
	require.Equal(t, LabelNone, s.value(""))
	require.Equal(t, LabelOther, s.value("Upper"))
	require.Equal(t, LabelOther, s.value(strings.Repeat("a", 33)))
}

func TestStatusLabel(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]string{200: "200", 402: "402", 429: "429", 504: "504", 299: "2xx", 599: "5xx", 0: "other", 99: "other", 600: "other", -1: "other"} {
		require.Equal(t, want, statusLabel(code), code)
	}
	distinct := map[string]bool{}
	for c := -10; c < 2000; c++ {
		distinct[statusLabel(c)] = true
	}
	require.Less(t, len(distinct), 80)
}
