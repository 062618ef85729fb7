package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// Offers turns one priced endpoint into its accepts entries: the payment
// configuration (schemes, network, payTo) the gateway's 402 uses, so the
// catalog lists what a client will actually be asked for. The payment stage
// implements it; tests use a fake over x402.NewRequirement.
type Offers interface {
	// Accepts returns the requirements of one endpoint of t, in the order
	// a 402 offers them. p is the endpoint's price (p.Route is nil for the
	// tenant's own fallback price); resourceURL is the listed resource.
	Accepts(t *tenant.Tenant, p tenant.Priced, resourceURL string) ([]x402.Requirement, error)
}

// Item is one discovered resource in the x402 v2 list format (x402
// specification v2, section 8.2), plus the quality figures and the
// resource's extensions.
type Item struct {
	// Resource is the URL a client calls: the gateway's base URL, /t/<slug>
	// (or the tenant's own host) and the route's template.
	Resource string `json:"resource"`
	// Type is "http".
	Type string `json:"type"`
	// X402Version is 2.
	X402Version int `json:"x402Version"`
	// Accepts are the version 2 payment requirements.
	Accepts []x402.PaymentRequirements `json:"accepts"`
	// LastUpdated is the Unix time (seconds) at which this handler first
	// saw the item as it is now (the specification's type; the npm
	// client's typings say an ISO string, which no runtime check enforces).
	LastUpdated int64 `json:"lastUpdated"`
	// Description and MimeType are the route's.
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
	// Metadata says where the resource sits in the marketplace.
	Metadata Metadata `json:"metadata"`
	// Extensions holds the route's Bazaar declaration under "bazaar".
	Extensions map[string]json.RawMessage `json:"extensions,omitempty"`
	// Quality summarises the API's last 30 days.
	Quality Quality `json:"quality"`
}

// Metadata is an item's marketplace information.
type Metadata struct {
	// APIID is the tenant slug.
	APIID string `json:"apiId"`
	// Category is the tenant's marketplace directory.
	Category string `json:"category"`
	// Provider is the tenant's owner.
	Provider string `json:"provider,omitempty"`
	// Method is the route's method, empty for any.
	Method string `json:"method,omitempty"`
	// Path is the route's path pattern, "/*" for the tenant's fallback
	// price (every path no route prices).
	Path string `json:"path"`
	// RouteTemplate is the Bazaar template of a dynamic route.
	RouteTemplate string `json:"routeTemplate,omitempty"`
	// PriceUSD and MaxPriceUSD are exact decimal strings.
	PriceUSD    string `json:"priceUsd"`
	MaxPriceUSD string `json:"maxPriceUsd,omitempty"`
	// Schemes are the directory's scheme names, in order.
	Schemes []string `json:"schemes"`
}

// Quality is an item's analytics over the last 30 days. Rollups are kept
// per API, so every route of one API carries the API's figures; the
// caller of a paid call is its payer.
type Quality struct {
	L30DaysTotalCalls   int64 `json:"l30DaysTotalCalls"`
	L30DaysUniquePayers int   `json:"l30DaysUniquePayers"`
}

// apiQuality is the 30-day quality of every API, by slug.
type apiQuality map[string]Quality

// queryQuality reads 30 days of rollups (ending with the current hour) and
// folds them with the analytics' own snapshot builder, so the figures are
// the ones the leaderboard would show for that range.
func queryQuality(ctx context.Context, store metrics.Store, now time.Time) (apiQuality, error) {
	q := metrics.RollupQuery{From: metrics.HourOf(now).Add(-30 * 24 * time.Hour), To: metrics.HourOf(now).Add(time.Hour)}
	rollups, err := store.Rollups(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("discovery: quality: %w", err)
	}
	snap, err := metrics.BuildWindowSnapshot(metrics.WindowOverall, now, rollups, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: quality: %w", err)
	}
	out := make(apiQuality, len(snap.APIs))
	for _, a := range snap.APIs {
		if a.Calls > 0 {
			out[a.APIID] = Quality{L30DaysTotalCalls: a.Calls, L30DaysUniquePayers: a.UniqueCallers}
		}
	}
	return out, nil
}

// endpoint is one listed priced endpoint before it becomes an Item.
type endpoint struct {
	t      *tenant.Tenant
	priced tenant.Priced
	path   string // pattern; "/*" for the fallback
}

// endpointsOf lists a tenant's priced endpoints: every charging route in
// directory order, then the tenant's own price when it charges (the
// fallback for paths no route matches). The price of a route is worked out
// as tenant.PriceFor does for a request it matches.
func endpointsOf(t *tenant.Tenant) []endpoint {
	var out []endpoint
	for i := range t.Routes {
		r := &t.Routes[i]
		p := routePriced(t, r)
		if p.Charges {
			out = append(out, endpoint{t: t, priced: p, path: r.Path})
		}
	}
	if t.X402Enabled && t.PriceUSD.IsPositive() {
		s := t.Schemes
		if len(s) == 0 {
			s = []string{tenant.DefaultScheme}
		}
		out = append(out, endpoint{t: t, path: "/*", priced: tenant.Priced{
			PriceUSD: t.PriceUSD, MaxPriceUSD: t.PriceUSD, Schemes: s, Charges: true,
		}})
	}
	return out
}

// routePriced is a route's effective price (DESIGN section 13): the
// route's price or the tenant's, the maximum defaulting to the price, the
// route's schemes or the tenant's or ["exact"].
func routePriced(t *tenant.Tenant, r *tenant.Route) tenant.Priced {
	p := tenant.Priced{Route: r, Pattern: r.Path, PriceUSD: t.PriceUSD, Description: r.Description, MimeType: r.MimeType}
	if r.PriceUSD != nil {
		p.PriceUSD = *r.PriceUSD
	}
	p.MaxPriceUSD = p.PriceUSD
	if r.MaxPriceUSD != nil {
		p.MaxPriceUSD = *r.MaxPriceUSD
	}
	switch {
	case len(r.Schemes) > 0:
		p.Schemes = r.Schemes
	case len(t.Schemes) > 0:
		p.Schemes = t.Schemes
	default:
		p.Schemes = []string{tenant.DefaultScheme}
	}
	p.Charges = t.X402Enabled && (p.PriceUSD.IsPositive() || p.MaxPriceUSD.IsPositive())
	return p
}

// catalogBuilder turns a directory into items.
type catalogBuilder struct {
	offers   Offers
	baseURL  string
	useHosts bool
	log      *slog.Logger
}

// resourceURL is where a client calls an endpoint: the tenant's first host
// (with the base URL's scheme) when useHosts is set and it has one,
// otherwise the base URL and /t/<slug>; then the route's template.
func (b *catalogBuilder) resourceURL(t *tenant.Tenant, path string) (string, string) {
	tmpl := parsePattern(path).template()
	if path == "/*" {
		tmpl = "/"
	}
	if b.useHosts && len(t.Hosts) > 0 {
		scheme := "https"
		if i := strings.Index(b.baseURL, "://"); i > 0 {
			scheme = b.baseURL[:i]
		}
		return scheme + "://" + t.Hosts[0] + tmpl, ""
	}
	prefix := "/t/" + t.Slug
	return b.baseURL + prefix + tmpl, prefix
}

func (b *catalogBuilder) item(ctx context.Context, e endpoint, q Quality) (Item, bool) {
	t := e.t
	url, prefix := b.resourceURL(t, e.path)
	reqs, err := b.offers.Accepts(t, e.priced, url)
	if err != nil || len(reqs) == 0 {
		b.log.LogAttrs(ctx, slog.LevelWarn, "discovery: endpoint left out of the catalog",
			slog.String("tenant", t.Slug), slog.String("path", e.path), slog.Any("error", err))
		return Item{}, false
	}
	dir := t.Directory
	if dir == "" {
		dir = metrics.DefaultDirectory
	}
	it := Item{
		Resource: url, Type: "http", X402Version: x402.Version2,
		Description: e.priced.Description, MimeType: e.priced.MimeType,
		Metadata: Metadata{
			APIID: t.Slug, Category: dir, Provider: t.OwnerUserID, Path: e.path,
			PriceUSD: e.priced.PriceUSD.String(), Schemes: append([]string(nil), e.priced.Schemes...),
		},
		Quality: q,
	}
	if !e.priced.MaxPriceUSD.Equal(e.priced.PriceUSD) && !e.priced.MaxPriceUSD.Equal(decimal.Zero) {
		it.Metadata.MaxPriceUSD = e.priced.MaxPriceUSD.String()
	}
	for _, r := range reqs {
		it.Accepts = append(it.Accepts, r.V2())
	}
	if r := e.priced.Route; r != nil {
		it.Metadata.Method = r.Method
		if p := parsePattern(r.Path); p.dynamic() {
			it.Metadata.RouteTemplate = prefix + p.template()
		}
		if len(r.Discovery) > 0 {
			ext, err := bazaar("", r, BazaarOptions{Prefix: prefix})
			if err != nil {
				b.log.LogAttrs(ctx, slog.LevelWarn, "discovery: route's Bazaar declaration left out",
					slog.String("tenant", t.Slug), slog.String("path", e.path), slog.String("error", err.Error()))
			} else {
				it.Extensions = map[string]json.RawMessage{ExtensionKey: ext}
			}
		}
	}
	return it, true
}

// fingerprint identifies an item's content apart from LastUpdated and
// Quality, so LastUpdated moves only when the listing itself changes.
func fingerprint(it Item) [32]byte {
	it.LastUpdated, it.Quality = 0, Quality{}
	b, _ := json.Marshal(it)
	return sha256.Sum256(b)
}
