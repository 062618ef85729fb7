package marketplace

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHomeRendersHeroLeaderboardAndDirectories(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	traffic(t, f.events, "weather", 40, 20, t0.Add(-time.Hour), "0.002")
	traffic(t, f.events, "cities", 12, 6, t0.Add(-2*time.Hour), "")
	res, body := fetch(t, f.h, http.MethodGet, "/")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
	require.Contains(t, res.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Contains(t, body, `<meta name="viewport" content="width=device-width, initial-scale=1">`)
	require.Equal(t, []string{"weather", "cities"}, leaderboard(body))
	require.Contains(t, body, `<div class="v" data-hero="activeAgents">26</div>`)
	require.Contains(t, body, `<div class="v" data-hero="calls">52</div>`)
	require.Contains(t, body, `<div class="v" data-hero="revenueUsd">$0.08</div>`)
	require.Contains(t, body, `<div class="v" data-hero="publishedApis">5</div>`)
	require.Contains(t, body, `<a href="/apis/weather">weather</a>`)
	// Directories list every published API, the busiest directory first.
	require.Regexp(t, `(?s)data-directory="data".*data-directory="ai".*data-directory="archive"`, body)
	require.Contains(t, body, `<li><a href="/apis/weather">weather</a> <span class="price">from $0.002</span></li>`)
	require.Contains(t, body, `<li><a href="/apis/old">old</a> <span class="free">free</span></li>`)
	// Assets are local, the script is deferred, and no CDN is named.
	require.Contains(t, body, `<link rel="stylesheet" href="/assets/marketplace.css">`)
	require.Contains(t, body, `<script src="/assets/marketplace.js" defer></script>`)
	require.NotRegexp(t, `(src|href)="(https?:)?//`, body)
}

func TestWindowSwitch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	traffic(t, f.events, "cities", 5, 5, t0.Add(-time.Hour), "")
	traffic(t, f.events, "chat", 30, 15, t0.AddDate(0, 0, -3), "0.05")
	traffic(t, f.events, "old", 50, 25, t0.AddDate(0, -2, 0), "")
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"cities"}},
		{"?window=today", []string{"cities"}},
		{"?window=week", []string{"chat", "cities"}},
		{"?window=overall", []string{"chat", "old", "cities"}}, // chat earns, so it outranks old
	} {
		_, body := fetch(t, f.h, http.MethodGet, "/"+tc.query)
		require.Equal(t, tc.want, leaderboard(body), tc.query)
		current := regexp.MustCompile(`<a href="/\?window=(\w+)" aria-current="page"`).FindAllStringSubmatch(body, -1)
		require.Len(t, current, 1, tc.query)
		want := strings.TrimPrefix(tc.query, "?window=")
		if want == "" {
			want = "today"
		}
		require.Equal(t, want, current[0][1])
		require.Contains(t, body, `data-window="`+want+`"`)
	}
}

func TestEmptyLeaderboard(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	_, body := fetch(t, f.h, http.MethodGet, "/")
	require.Empty(t, leaderboard(body))
	require.Contains(t, body, `<p class="empty" id="board-empty">No calls today yet.</p>`)
	require.Contains(t, body, `data-analytics="/__platform/analytics" hidden>`)
}

func TestBadRequestsAndUnknownPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for _, tc := range []struct {
		method, target string
		status         int
		says           string
	}{
		{http.MethodGet, "/?window=month", http.StatusBadRequest, "window must be today, week or overall"},
		{http.MethodGet, "/?window=today&window=week", http.StatusBadRequest, "more than once"},
		{http.MethodGet, "/apis/nope", http.StatusNotFound, "There is no API called &#34;nope&#34;"},
		{http.MethodGet, "/apis/Bad_Slug", http.StatusNotFound, "No such API"},
		{http.MethodGet, "/apis/", http.StatusNotFound, "No such API"},
		{http.MethodGet, "/elsewhere", http.StatusNotFound, "There is no page at this address."},
		{http.MethodGet, "/assets/nope.js", http.StatusNotFound, "There is no such file."},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, "only answers GET and HEAD"},
		{http.MethodDelete, "/apis/weather", http.StatusMethodNotAllowed, "only answers GET and HEAD"},
	} {
		res, body := fetch(t, f.h, tc.method, tc.target)
		require.Equal(t, tc.status, res.StatusCode, tc.target)
		require.Contains(t, body, tc.says, tc.target)
		require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
		if tc.status == http.StatusMethodNotAllowed {
			require.Equal(t, "GET, HEAD", res.Header.Get("Allow"))
		}
	}
	res, body := fetch(t, f.h, http.MethodHead, "/apis/weather")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Empty(t, body)
	require.NotEqual(t, "0", res.Header.Get("Content-Length"))
}

func TestAPIPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	traffic(t, f.events, "weather", 7, 3, t0.Add(-5*time.Hour), "0.002")
	traffic(t, f.events, "weather", 2, 2, t0, "0.002")
	traffic(t, f.events, "weather", 9, 9, t0.Add(-30*time.Hour), "") // outside the chart, inside the week
	res, body := fetch(t, f.h, http.MethodGet, "/apis/weather")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, body, `<h1 data-api="weather">weather</h1>`)
	require.Contains(t, body, `<tr data-route="/forecast/:city"><td><code>GET</code></td><td><code>/forecast/:city</code></td><td class="num"><span class="price">$0.002</span></td><td>exact, exact-permit2</td>`)
	require.Contains(t, body, `<tr data-route="/llm/*"><td><code>ANY</code></td><td><code>/llm/*</code></td><td class="num"><span class="price">$0.01</span> <span class="tag">up to $0.5</span></td><td>upto</td>`)
	require.Contains(t, body, `<tr data-route="/health"><td><code>GET</code></td><td><code>/health</code></td><td class="num"><span class="free">free</span></td>`)
	require.Contains(t, body, `<tr data-route="any other path">`)
	require.Contains(t, body, `<pre id="curl-line">curl -i &#39;https://api.example.com/t/weather/forecast/Tokyo&#39;</pre>`)
	require.Contains(t, body, `<pre id="payclient-line">go run ./examples/payclient -url &#39;https://api.example.com/t/weather/forecast/Tokyo&#39;</pre>`)
	require.Contains(t, body, `18 calls from 9 callers, $0.018 paid`)

	// The chart: 24 hourly bars ending with the current hour.
	bars := regexp.MustCompile(`<rect class="bar" x="\d+" y="(\d+)" width="\d+" height="(\d+)" data-calls="(\d+)"><title>([^<]+)</title>`).FindAllStringSubmatch(body, -1)
	require.Len(t, bars, 24)
	require.Equal(t, "7", bars[18][3])
	require.Equal(t, "Mar 10 10:00: 7 calls", bars[18][4])
	require.Equal(t, "112", bars[18][2], "the busiest hour is full height")
	require.Equal(t, "2", bars[23][3])
	require.Equal(t, "Mar 10 15:00: 2 calls", bars[23][4])
	require.Equal(t, "32", bars[23][2], "2/7 of the height")
	require.Equal(t, "0", bars[0][2])
	require.NotContains(t, body, "No calls in the last 24 hours")

	_, body = fetch(t, f.h, http.MethodGet, "/apis/chat")
	require.Contains(t, body, "No calls in the last 24 hours")
	require.Contains(t, body, `<pre id="curl-line">curl -i &#39;https://api.example.com/t/chat/&#39;</pre>`)
}

func TestBaseURLDefaultsToTheRequestHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.BaseURL = "" })
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/apis/cities", nil)
	req.Host = "127.0.0.1:8402"
	f.h.ServeHTTP(rec, req)
	require.Contains(t, rec.Body.String(), `curl -i &#39;http://127.0.0.1:8402/t/cities/&#39;`)
}

// TestTenantTextIsEscaped: a tenant's directory, owner, route description
// and MIME type carrying markup render as text.
func TestTenantTextIsEscaped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	traffic(t, f.events, "sneaky", 3, 3, t0, "")
	for _, target := range []string{"/", "/?window=overall", "/apis/sneaky"} {
		_, body := fetch(t, f.h, http.MethodGet, target)
		require.NotContains(t, body, "<script>alert", target)
		require.NotContains(t, body, "<img src=x", target)
		require.NotContains(t, body, `"><b>`, target)
		require.Contains(t, body, "&lt;script&gt;alert(&#39;", target)
	}
	_, body := fetch(t, f.h, http.MethodGet, "/apis/sneaky")
	require.Contains(t, body, "&lt;script&gt;alert(&#39;route&#39;)&lt;/script&gt;")
	require.Contains(t, body, "by &lt;img src=x onerror=alert(1)&gt;")
}

// TestPagesAreCachedBriefly: however many requests arrive at once, a page
// is rendered once per CacheTTL (counted by the store reads a render does).
func TestPagesAreCachedBriefly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	traffic(t, f.events, "weather", 3, 3, t0, "")
	const n = 64
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, bodies[i] = fetch(t, f.h, http.MethodGet, "/?window=week")
		}()
	}
	wg.Wait()
	require.Equal(t, int64(1), f.store.reads.Load(), "one render for %d concurrent requests", n)
	for _, b := range bodies {
		require.Equal(t, bodies[0], b)
	}
	traffic(t, f.events, "cities", 9, 9, t0, "")
	_, body := fetch(t, f.h, http.MethodGet, "/?window=week")
	require.Equal(t, []string{"weather"}, leaderboard(body), "still the cached page")
	f.clock.Add(DefaultCacheTTL)
	_, body = fetch(t, f.h, http.MethodGet, "/?window=week")
	require.Equal(t, []string{"cities", "weather"}, leaderboard(body), "rendered again after the TTL")
	require.Equal(t, int64(2), f.store.reads.Load())
	// Each window and each API page is its own entry.
	fetch(t, f.h, http.MethodGet, "/?window=today")
	fetch(t, f.h, http.MethodGet, "/apis/weather")
	fetch(t, f.h, http.MethodGet, "/apis/weather")
	require.Equal(t, int64(4), f.store.reads.Load())
	// Unknown slugs are not rendered from the store at all.
	for i := 0; i < 10; i++ {
		fetch(t, f.h, http.MethodGet, "/apis/nope")
	}
	require.Equal(t, int64(4), f.store.reads.Load())
}

func TestAssetsAreEmbedded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for name, ctype := range map[string]string{"marketplace.css": "text/css; charset=utf-8", "marketplace.js": "text/javascript; charset=utf-8"} {
		res, body := fetch(t, f.h, http.MethodGet, "/assets/"+name)
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.Equal(t, ctype, res.Header.Get("Content-Type"))
		require.NotEmpty(t, body)
		etag := res.Header.Get("ETag")
		require.NotEmpty(t, etag)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/assets/"+name, nil)
		req.Header.Set("If-None-Match", etag)
		f.h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusNotModified, rec.Code)
	}
	_, js := fetch(t, f.h, http.MethodGet, "/assets/marketplace.js")
	require.NotContains(t, js, "innerHTML", "rows are built with textContent")
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	_, err := New(Config{Events: f.events})
	require.Error(t, err)
	_, err = New(Config{Registry: f.reg})
	require.Error(t, err)
	_, err = New(Config{Registry: f.reg, Events: f.events, BaseURL: "ftp://x"})
	require.Error(t, err)
}

// TestHostHeaderCannotForceRenders: with BaseURL unset the command lines use
// the request's host, yet every host shares one cached render.
func TestHostHeaderCannotForceRenders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.BaseURL = "" })
	for i := 0; i < 20; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/apis/cities", nil)
		req.Host = "h" + strings.Repeat("x", i) + ".example.com:8402"
		f.h.ServeHTTP(rec, req)
		require.Contains(t, rec.Body.String(), `curl -i &#39;http://`+req.Host+`/t/cities/&#39;`)
		require.NotContains(t, rec.Body.String(), originToken)
		require.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
	}
	require.Equal(t, int64(1), f.store.reads.Load(), "one render for twenty hosts")
}
