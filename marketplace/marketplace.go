package marketplace

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
)

//go:embed templates/*.html static/*
var files embed.FS

// Paths the handler serves.
const (
	// APIPrefix is the path prefix of the per-API pages: /apis/<slug>.
	APIPrefix = "/apis/"
	// AssetPrefix is the path prefix of the embedded stylesheet and script.
	AssetPrefix = "/assets/"
)

// Defaults of Config.
const (
	DefaultTitle          = "402claw marketplace"
	DefaultCacheTTL       = 2 * time.Second
	DefaultRefreshSeconds = 30
	DefaultAnalyticsPath  = "/__platform/analytics"
	DefaultTop            = 25
	// maxCacheEntries bounds the page cache: the pages are keyed by
	// window and by existing slug, so this is only a backstop.
	maxCacheEntries = 4096
)

// Config configures the marketplace handler.
type Config struct {
	// Registry is the live tenant directory (required).
	Registry *tenant.Registry
	// Events is the usage-event store analytics reads (required).
	Events metrics.Store
	// BaseURL is the gateway's public origin used in the example command
	// lines ("https://api.402claw.dev"); empty means the request's own
	// scheme and Host.
	BaseURL string
	// Title names the marketplace (default DefaultTitle).
	Title string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CacheTTL is how long a rendered page is reused (default
	// DefaultCacheTTL): however many requests arrive, each page is
	// rendered at most once per TTL.
	CacheTTL time.Duration
	// RefreshSeconds is how often the page's script refreshes the
	// leaderboard (default DefaultRefreshSeconds; negative turns it off).
	RefreshSeconds int
	// AnalyticsPath is where the script reads analytics (default
	// DefaultAnalyticsPath).
	AnalyticsPath string
	// Top is the number of leaderboard rows (default DefaultTop, at most
	// metrics.MaxTop).
	Top int
	// Logger receives internal errors; nil discards them.
	Logger *slog.Logger
}

// Handler serves the marketplace front:
//
//	GET /?window=today|week|overall  hero figures, the trending leaderboard, directories
//	GET /apis/<slug>                 one API: routes, prices, schemes, example commands, calls per hour
//	GET /assets/marketplace.css|js   the embedded stylesheet and script
//
// Pages are rendered on the server with html/template (every tenant-given
// string is escaped), work without JavaScript, and are cached for
// Config.CacheTTL, so a flood of requests costs one render per page per
// TTL. An unknown slug or path is a 404 page, a bad window a 400 page;
// methods other than GET and HEAD get 405.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	pages  map[string]*template.Template
	assets map[string]asset

	group singleflight.Group
	mu    sync.Mutex
	cache map[string]cached
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

type cached struct {
	status  int
	body    []byte
	expires time.Time
}

var funcs = template.FuncMap{
	"percent": func(x float64) string { return strconv.FormatFloat(x*100, 'f', 1, 64) + "%" },
}

// New validates cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Registry == nil {
		return nil, errors.New("marketplace: Config.Registry is required")
	}
	if cfg.Events == nil {
		return nil, errors.New("marketplace: Config.Events is required")
	}
	cfg.BaseURL = strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	if cfg.BaseURL != "" && !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("marketplace: Config.BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Title == "" {
		cfg.Title = DefaultTitle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.RefreshSeconds == 0 {
		cfg.RefreshSeconds = DefaultRefreshSeconds
	}
	if cfg.AnalyticsPath == "" {
		cfg.AnalyticsPath = DefaultAnalyticsPath
	}
	if cfg.Top <= 0 {
		cfg.Top = DefaultTop
	}
	cfg.Top = min(cfg.Top, metrics.MaxTop)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: log, pages: map[string]*template.Template{}, assets: map[string]asset{}, cache: map[string]cached{}}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"home", "api", "error"} {
		t, err := template.Must(layout.Clone()).ParseFS(files, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		h.pages[name] = t
	}
	for name, ctype := range map[string]string{"marketplace.css": "text/css; charset=utf-8", "marketplace.js": "text/javascript; charset=utf-8"} {
		b, err := fs.ReadFile(files, "static/"+name)
		if err != nil {
			return nil, err
		}
		h.assets[name] = asset{body: b, ctype: ctype, etag: fmt.Sprintf(`"%x"`, fnv(b))}
	}
	return h, nil
}

func fnv(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// contentSecurityPolicy allows only the page's own stylesheet, script and
// analytics fetches.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.writePage(w, r, http.StatusMethodNotAllowed, h.errorPage(r, "Method not allowed", "The marketplace only answers GET and HEAD."))
		return
	}
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, AssetPrefix):
		h.serveAsset(w, r, strings.TrimPrefix(path, AssetPrefix))
		return
	case path == "/":
		window, err := parseWindow(r)
		if err != nil {
			h.writePage(w, r, http.StatusBadRequest, h.errorPage(r, "Bad request", err.Error()))
			return
		}
		h.serveCached(w, r, "home "+string(window), func(ctx context.Context) (int, []byte, error) {
			return h.renderHome(ctx, r, window)
		})
		return
	case strings.HasPrefix(path, APIPrefix):
		slug := strings.TrimSuffix(strings.TrimPrefix(path, APIPrefix), "/")
		t, ok := h.cfg.Registry.Load().Lookup(slug)
		if !tenant.ValidSlug(slug) || !ok {
			h.writePage(w, r, http.StatusNotFound, h.errorPage(r, "No such API", "There is no API called "+strconv.Quote(slug)+" in this marketplace."))
			return
		}
		// The page is cached once for every host name: its command lines
		// carry a placeholder origin, replaced per request, so a client
		// cannot force renders by varying the Host header.
		h.serveCached(w, r, "api "+slug, func(ctx context.Context) (int, []byte, error) {
			return h.renderAPI(ctx, t)
		})
		return
	}
	h.writePage(w, r, http.StatusNotFound, h.errorPage(r, "Not found", "There is no page at this address."))
}

func parseWindow(r *http.Request) (metrics.Window, error) {
	vs := r.URL.Query()["window"]
	if len(vs) > 1 {
		return "", errors.New("window is given more than once")
	}
	s := ""
	if len(vs) == 1 {
		s = vs[0]
	}
	w, err := metrics.ParseWindow(s)
	if err != nil {
		return "", errors.New("window must be today, week or overall")
	}
	return w, nil
}

// serveCached answers from the page cache, rendering at most once per key
// at a time (concurrent misses share one render).
func (h *Handler) serveCached(w http.ResponseWriter, r *http.Request, key string, render func(context.Context) (int, []byte, error)) {
	now := h.cfg.Now()
	h.mu.Lock()
	c, ok := h.cache[key]
	h.mu.Unlock()
	if !ok || !now.Before(c.expires) {
		v, err, _ := h.group.Do(key, func() (any, error) {
			h.mu.Lock()
			c, ok := h.cache[key]
			h.mu.Unlock()
			if ok && now.Before(c.expires) {
				return c, nil
			}
			// The render does not belong to the first caller's request:
			// a client that goes away must not fail the others.
			ctx := context.WithoutCancel(r.Context())
			status, body, err := render(ctx)
			if err != nil {
				return nil, err
			}
			c = cached{status: status, body: body, expires: h.cfg.Now().Add(h.cfg.CacheTTL)}
			h.mu.Lock()
			if len(h.cache) >= maxCacheEntries {
				for k, old := range h.cache {
					if !now.Before(old.expires) {
						delete(h.cache, k)
					}
				}
				if len(h.cache) >= maxCacheEntries {
					clear(h.cache)
				}
			}
			h.cache[key] = c
			h.mu.Unlock()
			return c, nil
		})
		if err != nil {
			h.log.LogAttrs(r.Context(), slog.LevelError, "marketplace: render failed", slog.String("page", key), slog.String("error", err.Error()))
			h.writePage(w, r, http.StatusInternalServerError, h.errorPage(r, "Something went wrong", "The page could not be rendered. Try again in a moment."))
			return
		}
		c = v.(cached)
	}
	body := c.body
	if bytes.Contains(body, []byte(originToken)) {
		body = bytes.ReplaceAll(body, []byte(originToken), []byte(template.HTMLEscapeString(h.origin(r))))
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(max(1, int(h.cfg.CacheTTL/time.Second))))
	h.writePage(w, r, c.status, body)
}

// originToken stands for the request's origin in cached pages.
const originToken = "http://origin.marketplace.invalid"

func (h *Handler) writePage(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	if hd.Get("Cache-Control") == "" {
		hd.Set("Cache-Control", "no-store")
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := h.assets[name]
	if !ok {
		h.writePage(w, r, http.StatusNotFound, h.errorPage(r, "Not found", "There is no such file."))
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "public, max-age=300")
	hd.Set("ETag", a.etag)
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}

// site is what the layout needs.
type site struct {
	Title       string
	AssetPrefix string
}

type errorData struct {
	Site           site
	GeneratedAt    string
	Title, Message string
}

// errorPage renders the (uncached, cheap) error page.
func (h *Handler) errorPage(_ *http.Request, title, msg string) []byte {
	var buf bytes.Buffer
	err := h.pages["error"].ExecuteTemplate(&buf, "layout", errorData{
		Site: h.site(), GeneratedAt: h.cfg.Now().UTC().Format("2006-01-02 15:04"), Title: title, Message: msg,
	})
	if err != nil {
		return []byte("<!doctype html><title>Error</title><p>" + template.HTMLEscapeString(title))
	}
	return buf.Bytes()
}

func (h *Handler) site() site { return site{Title: h.cfg.Title, AssetPrefix: AssetPrefix} }

// origin is the base URL of the example command lines.
func (h *Handler) origin(r *http.Request) string {
	if h.cfg.BaseURL != "" {
		return h.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, ok := tenant.NormalizeHost(r.Host)
	if !ok {
		host = "localhost"
	} else if _, port, found := strings.Cut(strings.TrimPrefix(r.Host, host), ":"); found && port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}
