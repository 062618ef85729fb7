package metrics

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/402claw/dispatcher/dispatch"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

// PlatformPrefix is the path prefix of the platform routes; the dispatcher
// sends every request under it to the platform handler, never a tenant.
const PlatformPrefix = "/__platform/"

// PlatformConfig configures the platform handler. Zero values are defaults.
type PlatformConfig struct {
	// AdminToken guards GET /__platform/events. When empty the route
	// refuses every request.
	AdminToken string
	// Now is the clock analytics windows are computed from. Default
	// time.Now.
	Now func() time.Time
	// PublishedAPIs lists the APIs currently published (the tenant
	// directory); nil means none beyond those seen in events.
	PublishedAPIs func() []APIInfo
	// Logger receives internal errors; nil discards them.
	Logger *slog.Logger
	// AnalyticsCacheTTL is how long an analytics answer is reused: the
	// route is public and its cost grows with the store, so each window is
	// computed at most once per TTL (concurrent misses share one
	// computation), whatever the number of requests. Zero means
	// DefaultAnalyticsCacheTTL; a negative value disables the cache.
	AnalyticsCacheTTL time.Duration
}

// PlatformHandler serves the platform routes:
//
//	GET /__platform/health                         200 {"ok":true}
//	GET /__platform/events?limit=100               admin token; newest events first
//	GET /__platform/analytics?window=today&top=25  public marketplace analytics
//
// Analytics answers are cached per window for AnalyticsCacheTTL (top is
// at most MaxTop and only trims the cached leaderboard), so the public
// route cannot be used to make the store scan on every request.
//
// Every answer is JSON and carries X-Request-Id (an incoming UUID is kept).
// Errors are {"ok":false,"error":code,"message":text,"requestId":id} with
// 400 bad_request, 401 unauthorized, 404 not_found, 405
// method_not_allowed or 500 internal_error. HEAD is served like GET.
type PlatformHandler struct {
	store     Store
	cfg       PlatformConfig
	log       *slog.Logger
	tokenHash [32]byte
	cache     *analyticsCache
}

// NewPlatformHandler returns the platform handler over store.
func NewPlatformHandler(store Store, cfg PlatformConfig) (*PlatformHandler, error) {
	if store == nil {
		return nil, errors.New("metrics: NewPlatformHandler: nil store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.AnalyticsCacheTTL == 0 {
		cfg.AnalyticsCacheTTL = DefaultAnalyticsCacheTTL
	}
	h := &PlatformHandler{store: store, cfg: cfg, log: log, tokenHash: sha256.Sum256([]byte(cfg.AdminToken))}
	h.cache = newAnalyticsCache(cfg.AnalyticsCacheTTL, cfg.Now, h.computeAnalytics)
	return h, nil
}

// computeAnalytics builds a window's analytics with MaxTop rows; the cache
// trims them to each request's top.
func (h *PlatformHandler) computeAnalytics(ctx context.Context, w Window) (*MarketplaceAnalytics, error) {
	var published []APIInfo
	if h.cfg.PublishedAPIs != nil {
		published = h.cfg.PublishedAPIs()
	}
	return BuildMarketplaceAnalytics(ctx, h.store, AnalyticsOptions{
		Window: w, Top: MaxTop, Now: h.cfg.Now(), Published: published,
	})
}

// ServeHTTP implements http.Handler.
func (h *PlatformHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-Id")
	if u, err := uuid.Parse(rid); err != nil || len(rid) != 36 {
		rid = uuid.NewString()
	} else {
		rid = u.String()
	}
	w.Header().Set("X-Request-Id", rid)

	var route func(http.ResponseWriter, *http.Request, string)
	switch r.URL.Path {
	case PlatformPrefix + "health":
		route = h.health
	case PlatformPrefix + "events":
		route = h.events
	case PlatformPrefix + "analytics":
		route = h.analytics
	default:
		writeError(w, http.StatusNotFound, "not_found", "no platform route "+r.URL.Path, rid)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET", rid)
		return
	}
	route(w, r, rid)
}

func (h *PlatformHandler) health(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// authorized compares the bearer token in constant time (over SHA-256
// digests, so the token's length does not leak either).
func (h *PlatformHandler) authorized(r *http.Request) bool {
	if h.cfg.AdminToken == "" {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], h.tokenHash[:]) == 1
}

func (h *PlatformHandler) events(w http.ResponseWriter, r *http.Request, rid string) {
	w.Header().Set("Cache-Control", "no-store")
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="platform"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid admin bearer token is required", rid)
		return
	}
	limit, err := ParseEventsParams(r.URL.Query())
	if err != nil {
		h.fail(w, r, err, rid)
		return
	}
	events, err := h.store.Recent(r.Context(), limit)
	if err != nil {
		h.fail(w, r, err, rid)
		return
	}
	if events == nil {
		events = []UsageEvent{}
	}
	writeJSON(w, http.StatusOK, struct {
		Events []UsageEvent `json:"events"`
	}{events})
}

func (h *PlatformHandler) analytics(w http.ResponseWriter, r *http.Request, rid string) {
	window, top, err := ParseAnalyticsParams(r.URL.Query())
	if err != nil {
		h.fail(w, r, err, rid)
		return
	}
	out, err := h.cache.get(r.Context(), window, top)
	if err != nil {
		h.fail(w, r, err, rid)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// fail maps an error to its status: the one table of this handler.
func (h *PlatformHandler) fail(w http.ResponseWriter, r *http.Request, err error, rid string) {
	if errors.Is(err, ErrInvalidQuery) {
		writeError(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), "metrics: "), rid)
		return
	}
	h.log.LogAttrs(r.Context(), slog.LevelError, "platform route failed",
		slog.String("path", r.URL.Path), slog.String("requestId", rid), slog.String("error", err.Error()))
	writeError(w, http.StatusInternalServerError, "internal_error", "the request could not be completed", rid)
}

// ErrorBody is the JSON body of every error the platform routes return:
// the dispatcher's.
type ErrorBody = dispatch.ErrorBody

// writeError answers through the dispatcher's one error renderer: the
// status comes from its table for code (status only documents the call).
func writeError(w http.ResponseWriter, status int, code, msg, rid string) {
	_ = status
	w.Header().Set("X-Content-Type-Options", "nosniff")
	dispatch.WriteError(w, dispatch.Errorf(code, "%s", msg), rid)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(fmt.Sprintf(`{"ok":false,"error":"internal_error","message":"encoding failed","requestId":%q}`, w.Header().Get("X-Request-Id")))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
