package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/402claw/dispatcher/dispatch"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// Paths the handler serves.
const (
	// ResourcesPath lists the catalog.
	ResourcesPath = "/discovery/resources"
	// WellKnownPath is the host's x402 manifest, which points to
	// ResourcesPath.
	WellKnownPath = "/.well-known/x402"
)

// Query bounds of GET /discovery/resources.
const (
	DefaultLimit = 20
	MaxLimit     = 100
	// MaxOffset bounds offset; larger values are a bad request.
	MaxOffset = 1_000_000
)

// DefaultQualityTTL is how long 30-day quality figures are reused before
// the events store is asked again.
const DefaultQualityTTL = 30 * time.Second

// Config configures the discovery handler.
type Config struct {
	// Registry is the live tenant directory (required): the catalog
	// follows its swaps.
	Registry *tenant.Registry
	// Offers builds each endpoint's accepts entries (required).
	Offers Offers
	// Events, when set, supplies the 30-day quality figures; nil lists
	// zeros.
	Events metrics.Store
	// BaseURL is the gateway's public origin, such as
	// "https://api.402claw.dev" (required; a trailing "/" is dropped).
	BaseURL string
	// UseTenantHosts lists a tenant that has hosts under its first host
	// instead of BaseURL/t/<slug>.
	UseTenantHosts bool
	// Name and Description go into the /.well-known/x402 manifest.
	Name, Description string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// QualityTTL is how long quality figures are cached (default
	// DefaultQualityTTL).
	QualityTTL time.Duration
	// Logger receives catalog warnings and internal errors; nil discards.
	Logger *slog.Logger
}

// Handler serves the discovery API:
//
//	GET /discovery/resources?type=http&limit=20&offset=0  the catalog (x402 v2 list format)
//	GET /.well-known/x402                                  the host's manifest, pointing to it
//
// The catalog lists every priced endpoint of every tenant of the live
// directory, before any payment: each charging route, and each charging
// tenant's own price (path "/*"). It is rebuilt when the directory is
// swapped or the cached quality figures are refreshed, and filtered per
// request. The filters type, payTo, scheme, network and extensions are
// applied (an item matches when one of its accepts entries, or its
// extensions, carries the value); any other query parameter but limit and
// offset is named in "unappliedFilters". A malformed value, a repeated
// parameter, or limit or offset out of bounds is 400 bad_request with the
// gateway's JSON error body. Only GET and HEAD are served; answers may be
// read cross-origin.
type Handler struct {
	cfg Config
	log *slog.Logger
	b   catalogBuilder

	mu      sync.Mutex
	cat     *catalog
	quality apiQuality
	qualAt  time.Time
	qualErr bool
}

// catalog is the built, unfiltered list for one directory and one quality
// snapshot.
type catalog struct {
	dir     *tenant.Directory
	quality apiQuality
	items   []Item
	encoded [][]byte            // items[i] as JSON
	seen    map[string]seenItem // by resource + method
}

type seenItem struct {
	fp [32]byte
	at int64
}

// NewHandler validates cfg and returns the handler.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Registry == nil {
		return nil, errors.New("discovery: Config.Registry is required")
	}
	if cfg.Offers == nil {
		return nil, errors.New("discovery: Config.Offers is required")
	}
	cfg.BaseURL = strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("discovery: Config.BaseURL %q is not an absolute http(s) URL", cfg.BaseURL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.QualityTTL <= 0 {
		cfg.QualityTTL = DefaultQualityTTL
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		cfg: cfg, log: log,
		b: catalogBuilder{offers: cfg.Offers, baseURL: cfg.BaseURL, useHosts: cfg.UseTenantHosts, log: log},
	}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := requestID(r)
	w.Header().Set("X-Request-Id", rid)
	var serve func(http.ResponseWriter, *http.Request, string)
	switch r.URL.Path {
	case ResourcesPath, ResourcesPath + "/":
		serve = h.resources
	case WellKnownPath, WellKnownPath + ".json":
		serve = h.wellKnown
	default:
		writeError(w, http.StatusNotFound, "not_found", "no discovery route "+r.URL.Path, rid)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET", rid)
		return
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	serve(w, r, rid)
}

// ListResponse is the body of GET /discovery/resources.
type ListResponse struct {
	X402Version      int        `json:"x402Version"`
	Items            []Item     `json:"items"`
	Pagination       Pagination `json:"pagination"`
	UnappliedFilters []string   `json:"unappliedFilters,omitempty"`
}

// Pagination is the list's page.
type Pagination struct {
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
	Total  int `json:"total"`
}

func (h *Handler) resources(w http.ResponseWriter, r *http.Request, rid string) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error(), rid)
		return
	}
	cat := h.catalog(r.Context())
	w.Header().Set("Cache-Control", "public, max-age=5")
	writeJSONBytes(w, http.StatusOK, cat.list(q))
}

// list writes the ListResponse of q from the items' JSON encoded at build
// time, so a request costs a filter pass and a copy, not an encoding.
func (c *catalog) list(q Query) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"x402Version":2,"items":[`)
	total, n := 0, 0
	for i := range c.items {
		if !q.matches(&c.items[i]) {
			continue
		}
		if total >= q.Offset && n < q.Limit {
			if n > 0 {
				buf.WriteByte(',')
			}
			buf.Write(c.encoded[i])
			n++
		}
		total++
	}
	fmt.Fprintf(&buf, `],"pagination":{"limit":%d,"offset":%d,"total":%d}`, q.Limit, q.Offset, total)
	if len(q.Unapplied) > 0 {
		b, _ := marshal(q.Unapplied)
		buf.WriteString(`,"unappliedFilters":`)
		buf.Write(b)
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// List filters and pages items as GET /discovery/resources does.
func List(items []Item, q Query) ListResponse {
	matched := make([]Item, 0, min(len(items), q.Limit))
	total := 0
	for i := range items {
		if !q.matches(&items[i]) {
			continue
		}
		if total >= q.Offset && len(matched) < q.Limit {
			matched = append(matched, items[i])
		}
		total++
	}
	return ListResponse{
		X402Version: x402.Version2, Items: matched,
		Pagination:       Pagination{Limit: q.Limit, Offset: q.Offset, Total: total},
		UnappliedFilters: q.Unapplied,
	}
}

// catalog returns the current catalog, rebuilding it when the directory
// was swapped or the quality figures expired.
func (h *Handler) catalog(ctx context.Context) *catalog {
	dir := h.cfg.Registry.Load()
	now := h.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cfg.Events != nil && (h.quality == nil || now.Sub(h.qualAt) >= h.cfg.QualityTTL || now.Before(h.qualAt)) {
		q, err := queryQuality(ctx, h.cfg.Events, now)
		if err != nil {
			// Keep the figures we have; retry after the TTL, not on
			// every request.
			h.log.LogAttrs(ctx, slog.LevelError, "discovery: quality query failed", slog.String("error", err.Error()))
			if h.quality == nil {
				q = apiQuality{}
			} else {
				q = h.quality
			}
		}
		h.quality, h.qualAt = q, now
	}
	if h.cat != nil && h.cat.dir == dir && sameQuality(h.cat.quality, h.quality) {
		return h.cat
	}
	h.cat = h.build(ctx, dir, h.quality, now, h.cat)
	return h.cat
}

func sameQuality(a, b apiQuality) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (h *Handler) build(ctx context.Context, dir *tenant.Directory, q apiQuality, now time.Time, prev *catalog) *catalog {
	c := &catalog{dir: dir, quality: q, seen: map[string]seenItem{}}
	ts := dir.Tenants()
	for i := range ts {
		t := &ts[i]
		for _, e := range endpointsOf(t) {
			it, ok := h.b.item(ctx, e, q[t.Slug])
			if !ok {
				continue
			}
			key := it.Metadata.Method + " " + it.Resource
			if _, dup := c.seen[key]; dup {
				continue
			}
			fp := fingerprint(it)
			it.LastUpdated = now.Unix()
			if prev != nil {
				if s, ok := prev.seen[key]; ok && s.fp == fp {
					it.LastUpdated = s.at
				}
			}
			enc, err := marshal(it)
			if err != nil {
				h.log.LogAttrs(ctx, slog.LevelError, "discovery: item not encodable", slog.String("resource", it.Resource), slog.String("error", err.Error()))
				continue
			}
			c.seen[key] = seenItem{fp: fp, at: it.LastUpdated}
			c.items = append(c.items, it)
			c.encoded = append(c.encoded, enc)
		}
	}
	return c
}

// Manifest is the body of GET /.well-known/x402: the host's x402 manifest
// (the x402 "discovery" extension's .well-known record) for a resource
// server, whose resources are bare pointers and whose "discovery" member
// points to the full catalog.
type Manifest struct {
	X402Version int    `json:"x402Version"`
	Kind        string `json:"kind"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	// Discovery points to the catalog.
	Discovery ManifestDiscovery `json:"discovery"`
	// Resources are bare pointers: url, method, description. The 402 of
	// each stays authoritative for payment.
	Resources []ManifestResource `json:"resources"`
	// Updated is the newest lastUpdated of the catalog, RFC 3339.
	Updated string `json:"updated,omitempty"`
}

// ManifestDiscovery names the discovery endpoint.
type ManifestDiscovery struct {
	Resources string `json:"resources"`
}

// ManifestResource is a bare pointer to one resource.
type ManifestResource struct {
	URL         string `json:"url"`
	Method      string `json:"method,omitempty"`
	Description string `json:"description,omitempty"`
}

func (h *Handler) wellKnown(w http.ResponseWriter, r *http.Request, _ string) {
	cat := h.catalog(r.Context())
	m := Manifest{
		X402Version: x402.Version2, Kind: "resource-server",
		Name: h.cfg.Name, Description: h.cfg.Description,
		Discovery: ManifestDiscovery{Resources: h.cfg.BaseURL + ResourcesPath},
		Resources: make([]ManifestResource, 0, len(cat.items)),
	}
	var newest int64
	for _, it := range cat.items {
		m.Resources = append(m.Resources, ManifestResource{URL: it.Resource, Method: it.Metadata.Method, Description: it.Description})
		newest = max(newest, it.LastUpdated)
	}
	if newest > 0 {
		m.Updated = time.Unix(newest, 0).UTC().Format(time.RFC3339)
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, m)
}

// Query is a parsed GET /discovery/resources query.
type Query struct {
	Limit, Offset int
	// Type, PayTo, Scheme and Network are empty when not filtered.
	Type, PayTo, Scheme, Network string
	// Extensions are extension keys every item must carry.
	Extensions []string
	// Unapplied names the query parameters this handler does not filter
	// by, sorted.
	Unapplied []string
}

var knownParams = []string{"type", "payTo", "scheme", "network", "extensions", "limit", "offset"}

// ParseQuery reads the list parameters. limit is 1 to MaxLimit (default
// DefaultLimit), offset 0 to MaxOffset; type, scheme and extension keys are
// short tokens; network is a CAIP-2 identifier (a known version 1 name is
// translated); payTo is an address of letters and digits. A repeated
// parameter is an error. Unknown parameters are collected in Unapplied.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit}
	get := func(name string) (string, bool, error) {
		vs, ok := v[name]
		if !ok {
			return "", false, nil
		}
		if len(vs) > 1 {
			return "", false, fmt.Errorf("%s is given more than once", name)
		}
		return vs[0], true, nil
	}
	for name := range v {
		if !slices.Contains(knownParams, name) {
			if len(q.Unapplied) >= 32 {
				return Query{}, errors.New("too many query parameters")
			}
			q.Unapplied = append(q.Unapplied, name)
		}
	}
	slices.Sort(q.Unapplied)
	var err error
	if s, ok, e := get("limit"); e != nil {
		return Query{}, e
	} else if ok {
		if q.Limit, err = boundedInt(s, 1, MaxLimit); err != nil {
			return Query{}, fmt.Errorf("limit: %w", err)
		}
	}
	if s, ok, e := get("offset"); e != nil {
		return Query{}, e
	} else if ok {
		if q.Offset, err = boundedInt(s, 0, MaxOffset); err != nil {
			return Query{}, fmt.Errorf("offset: %w", err)
		}
	}
	if s, ok, e := get("type"); e != nil {
		return Query{}, e
	} else if ok {
		if !isFilterToken(s) {
			return Query{}, fmt.Errorf("type %q is not a resource type such as http", s)
		}
		q.Type = s
	}
	if s, ok, e := get("scheme"); e != nil {
		return Query{}, e
	} else if ok {
		if !isFilterToken(s) {
			return Query{}, fmt.Errorf("scheme %q is not a scheme name such as exact", s)
		}
		q.Scheme = s
	}
	if s, ok, e := get("payTo"); e != nil {
		return Query{}, e
	} else if ok {
		if !isAddressLike(s) {
			return Query{}, fmt.Errorf("payTo %q is not an address", s)
		}
		q.PayTo = s
	}
	if s, ok, e := get("network"); e != nil {
		return Query{}, e
	} else if ok {
		if nw, err := x402.LookupNetwork(s); err == nil {
			s = nw.ID
		}
		if !isCAIP2(s) {
			return Query{}, fmt.Errorf("network %q is not a CAIP-2 identifier such as eip155:8453", s)
		}
		q.Network = s
	}
	if s, ok, e := get("extensions"); e != nil {
		return Query{}, e
	} else if ok {
		for _, k := range strings.Split(s, ",") {
			k = strings.TrimSpace(k)
			if !isExtensionKey(k) {
				return Query{}, fmt.Errorf("extensions: %q is not an extension key such as bazaar", k)
			}
			q.Extensions = append(q.Extensions, k)
		}
		if len(q.Extensions) > 16 {
			return Query{}, errors.New("extensions: more than 16 keys")
		}
	}
	return q, nil
}

func (q *Query) matches(it *Item) bool {
	if q.Type != "" && it.Type != q.Type {
		return false
	}
	if q.Scheme != "" && !slices.ContainsFunc(it.Accepts, func(a x402.PaymentRequirements) bool { return a.Scheme == q.Scheme }) {
		return false
	}
	if q.Network != "" && !slices.ContainsFunc(it.Accepts, func(a x402.PaymentRequirements) bool { return a.Network == q.Network }) {
		return false
	}
	if q.PayTo != "" && !slices.ContainsFunc(it.Accepts, func(a x402.PaymentRequirements) bool { return strings.EqualFold(a.PayTo, q.PayTo) }) {
		return false
	}
	for _, k := range q.Extensions {
		if _, ok := it.Extensions[k]; !ok {
			return false
		}
	}
	return true
}

func boundedInt(s string, lo, hi int) (int, error) {
	if s == "" || len(s) > 9 {
		return 0, fmt.Errorf("%q is not an integer from %d to %d", s, lo, hi)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not an integer from %d to %d", s, lo, hi)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not an integer from %d to %d", s, lo, hi)
	}
	return n, nil
}

// isFilterToken accepts lower-case names: a letter or digit, then letters,
// digits, "-" or "_", at most 64.
func isFilterToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')) {
			return false
		}
	}
	return true
}

// isExtensionKey accepts extension identifiers such as "bazaar" and
// "payment-identifier".
func isExtensionKey(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')) {
			return false
		}
	}
	return true
}

// isAddressLike accepts 1 to 128 letters and digits (EVM hex addresses,
// base58 ones), optionally with a namespace prefix and ":".
func isAddressLike(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isCAIP2 checks the CAIP-2 chain id grammar:
// namespace [-a-z0-9]{3,8} ":" reference [-_a-zA-Z0-9]{1,32}.
func isCAIP2(s string) bool {
	ns, ref, ok := strings.Cut(s, ":")
	if !ok || len(ns) < 3 || len(ns) > 8 || len(ref) < 1 || len(ref) > 32 {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func requestID(r *http.Request) string {
	rid := r.Header.Get("X-Request-Id")
	if u, err := uuid.Parse(rid); err == nil && len(rid) == 36 {
		return u.String()
	}
	return uuid.NewString()
}

// ErrorBody is the gateway's JSON error body (the dispatcher's).
type ErrorBody = dispatch.ErrorBody

// writeError answers through the dispatcher's one error renderer: the
// status comes from its table for code (status only documents the call).
func writeError(w http.ResponseWriter, status int, code, msg, rid string) {
	_ = status
	w.Header().Set("Cache-Control", "no-store")
	dispatch.WriteError(w, dispatch.Errorf(code, "%s", msg), rid)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorBody{Error: "internal_error", Message: "encoding failed", RequestID: w.Header().Get("X-Request-Id")})
	}
	writeJSONBytes(w, status, b)
}

func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
