package marketplace

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// findBrowser returns a Chromium-family browser, or skips the test; in CI
// (CI=true) a missing browser fails it instead.
func findBrowser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium, chromium-browser or google-chrome on PATH; .ci/chromium.sh installs it")
	}
	t.Skip("no Chromium-family browser installed")
	return ""
}

// browserSite is the marketplace, the platform routes and a paid route
// behind one test server, the way the example server mounts them.
type browserSite struct {
	*fixture
	srv *httptest.Server
}

func newBrowserSite(t *testing.T) *browserSite {
	t.Helper()
	f := newFixture(t, func(c *Config) {
		c.BaseURL = ""
		c.RefreshSeconds = 1
	})
	// The pages read the real clock's cache TTL here: the browser waits in
	// real time, so the fixture clock follows it.
	platform, err := metrics.NewPlatformHandler(f.events, metrics.PlatformConfig{
		Now: f.clock.Now, PublishedAPIs: func() []metrics.APIInfo { return published(f.reg.Load()) },
	})
	require.NoError(t, err)
	pr := paymentRequired(t)
	mux := http.NewServeMux()
	mux.Handle("/", f.h)
	mux.Handle(metrics.PlatformPrefix, platform)
	mux.HandleFunc("/t/weather/forecast/Tokyo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(pr)
		w.Header().Set(x402.HeaderPaymentRequired, base64.StdEncoding.EncodeToString(b))
		if WantsHTML(r) {
			w.Header().Set("Content-Type", PaywallContentType)
			w.WriteHeader(http.StatusPaymentRequired)
			_, _ = w.Write(Paywall(pr))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = w.Write(b)
	})
	s := &browserSite{fixture: f, srv: httptest.NewServer(mux)}
	t.Cleanup(s.srv.Close)
	return s
}

// pageProblems collects what a page must never do: throw, log a console
// error, log a browser error (a failed load, a CSP violation) or open a
// dialog.
type pageProblems struct {
	mu       sync.Mutex
	problems []string
	allow    func(text, url string) bool
}

func (p *pageProblems) add(s string) {
	p.mu.Lock()
	p.problems = append(p.problems, s)
	p.mu.Unlock()
}

func (p *pageProblems) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

// newTab opens a tab that records its problems.
func newTab(t *testing.T, browser context.Context, allow func(text, url string) bool) (context.Context, *pageProblems) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	probs := &pageProblems{allow: allow}
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			probs.add("exception: " + (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				probs.add("console." + string(ev.Type) + ": " + strings.Join(args, " "))
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError && (probs.allow == nil || !probs.allow(ev.Entry.Text, ev.Entry.URL)) {
				probs.add("log: " + ev.Entry.Text + " " + ev.Entry.URL)
			}
		case *page.EventJavascriptDialogOpening:
			probs.add("dialog: " + ev.Message)
		}
	}))
	_, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{})
	require.NoError(t, err)
	return ctx, probs
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

const rowsJS = `Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.api)`

// TestInBrowser drives the marketplace in headless Chromium: the
// leaderboard after traffic, the window switch, the script's refresh, an
// API page, escaping, the page without JavaScript, a phone-sized screen and
// the paywall; no page may throw, log an error or open a dialog.
func TestInBrowser(t *testing.T) {
	bin := findBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 || os.Getenv("CI") == "true" {
		opts = append(opts, chromedp.NoSandbox)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	require.NoError(t, chromedp.Do(browser), "start the browser")

	s := newBrowserSite(t)
	now := s.clock.Now()
	traffic(t, s.events, "weather", 40, 20, now.Add(-time.Hour), "0.002")
	traffic(t, s.events, "cities", 12, 6, now.Add(-2*time.Hour), "")
	traffic(t, s.events, "old", 50, 25, now.AddDate(0, -1, 0), "")
	traffic(t, s.events, "sneaky", 2, 2, now.AddDate(0, 0, -2), "")
	shots := screenshotDir(t)

	t.Run("leaderboard after traffic", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#leaderboard tbody tr")))
		require.Equal(t, []string{"weather", "cities"}, run(t, tab, chromedp.Evaluate[[]string](rowsJS)))
		require.Equal(t, "52", run(t, tab, chromedp.Text(chromedp.CSS(`[data-hero="calls"]`))))
		require.Equal(t, "$0.08", run(t, tab, chromedp.Text(chromedp.CSS(`[data-hero="revenueUsd"]`))))
		require.Equal(t, "Today", run(t, tab, chromedp.Text(chromedp.CSS(`.switch a[aria-current="page"]`))))
		writeShot(t, shots, "home.png", run(t, tab, chromedp.FullScreenshot(100)))
		require.Empty(t, probs.list())
	})

	t.Run("window switch", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#leaderboard")))
		do(t, tab, chromedp.Click(chromedp.CSS(`.switch a[data-window="overall"]`)),
			chromedp.WaitVisible(chromedp.CSS(`.switch a[data-window="overall"][aria-current="page"]`)))
		require.True(t, strings.HasSuffix(run(t, tab, chromedp.Location()), "/?window=overall"))
		require.Equal(t, []string{"weather", "old", "cities", "sneaky"}, run(t, tab, chromedp.Evaluate[[]string](rowsJS)), "old's traffic is a month old")
		do(t, tab, chromedp.Click(chromedp.CSS(`.switch a[data-window="week"]`)),
			chromedp.WaitVisible(chromedp.CSS(`.switch a[data-window="week"][aria-current="page"]`)))
		require.Equal(t, []string{"weather", "cities", "sneaky"}, run(t, tab, chromedp.Evaluate[[]string](rowsJS)))
		require.Empty(t, probs.list())
	})

	t.Run("script refreshes the leaderboard", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/?window=week"), chromedp.WaitVisible(chromedp.CSS("#leaderboard")))
		before := run(t, tab, chromedp.Evaluate[[]string](rowsJS))
		require.NotContains(t, before, "chat")
		traffic(t, s.events, "chat", 90, 45, s.clock.Now(), "0.05")
		// No reload: the script's fetch of /__platform/analytics brings
		// the new API in within a refresh period or two.
		run(t, tab, chromedp.Poll[bool](`Array.from(document.querySelectorAll('#leaderboard tbody tr')).some(r => r.dataset.api === 'chat')`,
			chromedp.WithPollingTimeout(10*time.Second)))
		rows := run(t, tab, chromedp.Evaluate[[]string](rowsJS))
		require.Equal(t, "chat", rows[0])
		require.Equal(t, "$4.58", run(t, tab, chromedp.Text(chromedp.CSS(`[data-hero="revenueUsd"]`))))
		// Rows the script builds escape like the server's: the sneaky
		// directory is text.
		dir := run(t, tab, chromedp.Evaluate[string](`document.querySelector('#leaderboard tr[data-api="sneaky"] td:nth-child(3)').textContent`))
		require.Equal(t, "<script>alert('dir')</script>", dir)
		require.Empty(t, probs.list())
	})

	t.Run("API page", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/apis/weather"), chromedp.WaitVisible(chromedp.CSS("#routes")))
		routes := run(t, tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('tr[data-route]')).map(r => r.dataset.route)`))
		require.Equal(t, []string{"/forecast/:city", "/llm/*", "/health", "any other path"}, routes)
		require.Equal(t, "$0.002", run(t, tab, chromedp.Text(chromedp.CSS(`tr[data-route="/forecast/:city"] .price`))))
		require.Equal(t, "curl -i '"+s.srv.URL+"/t/weather/forecast/Tokyo'", run(t, tab, chromedp.Text(chromedp.CSS("#curl-line"))))
		require.Equal(t, "go run ./examples/payclient -url '"+s.srv.URL+"/t/weather/forecast/Tokyo'", run(t, tab, chromedp.Text(chromedp.CSS("#payclient-line"))))
		require.Equal(t, 24, run(t, tab, chromedp.Evaluate[int](`document.querySelectorAll('.chart svg rect.bar').length`)))
		tall := run(t, tab, chromedp.Evaluate[float64](`Math.max(...Array.from(document.querySelectorAll('.chart svg rect.bar')).map(r => r.getBoundingClientRect().height))`))
		require.Greater(t, tall, 50.0, "the chart is drawn")
		require.Equal(t, 2, run(t, tab, chromedp.Evaluate[int](`document.querySelectorAll('.cmd button').length`)), "the script adds copy buttons")
		writeShot(t, shots, "api.png", run(t, tab, chromedp.FullScreenshot(100)))
		require.Empty(t, probs.list())
	})

	t.Run("tenant markup renders as text", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/apis/sneaky"), chromedp.WaitVisible(chromedp.CSS("#routes")))
		lead := run(t, tab, chromedp.Text(chromedp.CSS("p.lead")))
		require.Contains(t, lead, "<script>alert('dir')</script>")
		require.Contains(t, lead, "by <img src=x onerror=alert(1)>")
		desc := run(t, tab, chromedp.Text(chromedp.CSS(`tr[data-route="/x"] td.desc`)))
		require.Contains(t, desc, "<script>alert('route')</script>")
		require.Equal(t, 0, run(t, tab, chromedp.Evaluate[int](`document.querySelectorAll('main script, main img, main b').length`)))
		require.Empty(t, probs.list(), "no alert, no exception")
	})

	t.Run("works without JavaScript", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		_, err := chromedp.Call(tab, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		require.NoError(t, err)
		do(t, tab, chromedp.Navigate(s.srv.URL+"/?window=overall"), chromedp.WaitVisible(chromedp.CSS("#leaderboard tbody tr")))
		nodes := run(t, tab, chromedp.Nodes(chromedp.CSSAll("#leaderboard tbody tr")))
		require.GreaterOrEqual(t, len(nodes), 4, "the leaderboard is in the HTML")
		do(t, tab, chromedp.Click(chromedp.CSS(`.switch a[data-window="today"]`)),
			chromedp.WaitVisible(chromedp.CSS(`.switch a[data-window="today"][aria-current="page"]`)))
		do(t, tab, chromedp.Navigate(s.srv.URL+"/apis/weather"), chromedp.WaitVisible(chromedp.CSS("#curl-line")))
		buttons := run(t, tab, chromedp.Nodes(chromedp.CSSAll(".cmd button"), chromedp.AtLeast(0)))
		require.Empty(t, buttons, "copy buttons come only with the script")
		require.Empty(t, probs.list())
	})

	t.Run("phone-sized screen", func(t *testing.T) {
		tab, probs := newTab(t, browser, nil)
		do(t, tab, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
			chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#leaderboard")))
		overflow := run(t, tab, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		require.False(t, overflow, "no horizontal scrolling on a phone")
		hidden := run(t, tab, chromedp.Evaluate[string](`getComputedStyle(document.querySelector('#leaderboard th.hide-sm')).display`))
		require.Equal(t, "none", hidden, "secondary columns fold away")
		writeShot(t, shots, "home-phone.png", run(t, tab, chromedp.FullScreenshot(100)))
		require.Empty(t, probs.list())
	})

	t.Run("paywall", func(t *testing.T) {
		paid := s.srv.URL + "/t/weather/forecast/Tokyo"
		// The 402 of the document itself is expected; nothing else may fail.
		tab, probs := newTab(t, browser, func(text, url string) bool { return url == paid && strings.Contains(text, "402") })
		res := run(t, tab, chromedp.NavigateResponse(paid))
		require.Equal(t, int64(http.StatusPaymentRequired), res.Status)
		header := ""
		for k, v := range res.Headers {
			if strings.EqualFold(k, x402.HeaderPaymentRequired) {
				header, _ = v.(string)
			}
		}
		require.NotEmpty(t, header, "the x402 header stays")
		require.Contains(t, run(t, tab, chromedp.Title()), "Payment required")
		require.Equal(t, 3, run(t, tab, chromedp.Evaluate[int](`document.querySelectorAll('tr.offer').length`)))
		require.Equal(t, "https://api.example.com/t/weather/forecast/Tokyo?units=metric&days=3", run(t, tab, chromedp.Text(chromedp.CSS("#paywall-resource"))))
		require.Contains(t, run(t, tab, chromedp.Text(chromedp.CSS("#paywall-description"))), "<script>alert(1)</script>")
		require.Contains(t, run(t, tab, chromedp.Text(chromedp.CSS("tr.offer"))), "$0.01")
		writeShot(t, shots, "paywall.png", run(t, tab, chromedp.FullScreenshot(100)))
		require.Empty(t, probs.list())
	})
}

// showcaseDirectory is the demo marketplace of the README screenshot.
const showcaseDirectory = `{"tenants": [
 {"slug": "weather", "workerName": "w", "x402Enabled": true, "priceUsd": "0.002", "directory": "data", "ownerUserId": "acme"},
 {"slug": "cities", "workerName": "w", "x402Enabled": true, "priceUsd": "0.001", "directory": "data", "ownerUserId": "atlas"},
 {"slug": "fx-rates", "workerName": "w", "x402Enabled": true, "priceUsd": "0.0005", "directory": "finance", "ownerUserId": "ledgerly"},
 {"slug": "llm-summarize", "workerName": "w", "x402Enabled": true, "priceUsd": "0.01", "directory": "ai", "ownerUserId": "papers",
  "routes": [{"path": "/summarize/*", "schemes": ["upto"], "priceUsd": "0.01", "maxPriceUsd": "0.25"}]},
 {"slug": "translate", "workerName": "w", "x402Enabled": true, "priceUsd": "0.004", "directory": "ai", "ownerUserId": "babel"},
 {"slug": "headlines", "workerName": "w", "x402Enabled": true, "priceUsd": "0.003", "directory": "media", "ownerUserId": "wire"},
 {"slug": "status", "workerName": "w", "directory": "tools"}
]}`

// TestShowcaseScreenshot renders the demo marketplace in Chromium; with
// MARKETPLACE_SCREENSHOT=docs/marketplace.png it writes the README's
// screenshot there (relative to the module root).
func TestShowcaseScreenshot(t *testing.T) {
	bin := findBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.Headless,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 || os.Getenv("CI") == "true" {
		opts = append(opts, chromedp.NoSandbox)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()

	s := newBrowserSite(t)
	d, err := tenant.ParseDirectory([]byte(showcaseDirectory))
	require.NoError(t, err)
	s.reg.Swap(d)
	now := s.clock.Now()
	for _, tr := range []struct {
		api            string
		calls, callers int
		ago            time.Duration
		price          string
	}{
		{"llm-summarize", 120, 64, time.Hour, "0.01"}, {"llm-summarize", 80, 40, 3 * time.Hour, "0.01"},
		{"weather", 260, 90, 2 * time.Hour, "0.002"}, {"weather", 140, 70, 6 * time.Hour, "0.002"},
		{"translate", 90, 45, 4 * time.Hour, "0.004"}, {"fx-rates", 400, 30, 5 * time.Hour, "0.0005"},
		{"cities", 60, 25, 8 * time.Hour, "0.001"}, {"headlines", 35, 20, 9 * time.Hour, "0.003"},
		{"status", 50, 10, 10 * time.Hour, ""},
	} {
		traffic(t, s.events, tr.api, tr.calls, tr.callers, now.Add(-tr.ago), tr.price)
	}
	tab, probs := newTab(t, browser, nil)
	do(t, tab, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#leaderboard tbody tr")))
	require.Len(t, run(t, tab, chromedp.Evaluate[[]string](rowsJS)), 7)
	png := run(t, tab, chromedp.FullScreenshot(100))
	writeShot(t, screenshotDir(t), "showcase.png", png)
	if dst := os.Getenv("MARKETPLACE_SCREENSHOT"); dst != "" {
		writeShot(t, "", repoPath(t, dst), png)
	}
	require.Empty(t, probs.list())
}

// screenshotDir is testdata/screenshots (ignored by git), created on
// demand.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("testdata", "screenshots")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func writeShot(t *testing.T, dir, name string, png []byte) {
	t.Helper()
	require.True(t, len(png) > 8 && string(png[1:4]) == "PNG", "a PNG")
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, png, 0o644))
	t.Logf("screenshot %s (%d bytes)", p, len(png))
}

// repoPath resolves a path relative to the module root (where go.mod is),
// so MARKETPLACE_SCREENSHOT=docs/marketplace.png lands in the repository's
// docs folder whatever directory the test runs in.
func repoPath(t *testing.T, p string) string {
	t.Helper()
	if filepath.IsAbs(p) {
		return p
	}
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, p)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test directory")
		}
		dir = parent
	}
}
