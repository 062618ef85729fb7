// Package tenant holds the tenant model, parses and validates the tenant
// directory, and resolves which tenant a request is for.
//
// A directory is accepted in two JSON forms that parse to the same thing:
//
//	{"byHost": {"acme.api.402claw.dev": {...}}, "bySlug": {"acme": {...}}}
//	{"tenants": [{"slug": "acme", "workerName": "tenant-acme-worker", "hosts": [...]}]}
//
// In the first form an entry under byHost joins the tenant of the same slug
// (its host is added to that tenant's hosts); a byHost entry without a slug
// takes the first DNS label of its host as its slug.
//
// A directory is validated whole: one bad tenant rejects it, with an error
// naming the tenant and the field, and a [Registry] keeps serving the
// directory it had.
//
// A tenant may list routes, each a priced (or free) endpoint with its own
// schemes and discovery data ([Route]); [Tenant.PriceFor] finds the most
// specific route for a request without allocating. [Directory.Resolve]
// refuses tenant paths that a decoder could turn into another path (dot
// segments in any encoding, encoded slashes, backslashes) with
// [ErrBadRequest]. Package tenanttest is the conformance suite of the
// [Store] port.
package tenant

import (
	"strings"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/limits"
)

// MaxPriceDecimals is the most decimal places a price may have (micro-USD).
const MaxPriceDecimals = 6

// ValidSlug reports whether s is a well-formed tenant slug, that is whether
// it matches ^[a-z0-9][a-z0-9-]{0,62}$.
func ValidSlug(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Tenant is one paid API in the marketplace.
type Tenant struct {
	// Slug identifies the tenant: /t/<slug>/ routes to it and responses
	// carry it in X-Tenant-Id.
	Slug string `json:"slug"`
	// WorkerName names the worker that serves the tenant's requests.
	WorkerName string `json:"workerName"`
	// Plan is the canonical (lower-case) plan name; unknown plans are "free".
	Plan string `json:"plan"`
	// Hosts are the tenant's own host names, lower-case, without ports.
	Hosts []string `json:"hosts,omitempty"`
	// PriceUSD is the price of one request, an exact decimal with at most
	// six decimal places.
	PriceUSD decimal.Decimal `json:"priceUsd"`
	// X402Enabled turns payments on; a request is charged only when it is
	// set and the request's effective price or maximum (PriceFor) is
	// positive.
	X402Enabled bool             `json:"x402Enabled"`
	UsageLimit  UsageLimit       `json:"usageLimit"`
	SpendLimit  SpendLimit       `json:"spendLimit"`
	Limits      limits.Overrides `json:"limits"`
	RateLimit   RateLimit        `json:"rateLimit"`
	// OwnerUserID is the marketplace user who publishes the API.
	OwnerUserID string `json:"ownerUserId,omitempty"`
	// Directory is the marketplace category.
	Directory string `json:"directory,omitempty"`
	// PayTo overrides the platform's payment address for this tenant.
	PayTo string `json:"payTo,omitempty"`
	// Schemes is the tenant's default list of payment schemes, in the order
	// a 402 offers them, for requests that match no route and for routes
	// that list none. Empty means ["exact"]. Names are checked for form
	// here (^[a-z0-9][a-z0-9-]{0,31}$, no duplicates) and against the
	// configured schemes by the payment stage.
	Schemes []string `json:"schemes,omitempty"`
	// Cookies opts the tenant in to receiving the Cookie header and sending
	// Set-Cookie when it is served under the shared /t/<slug>/ path of the
	// gateway's host. Tenants there share one origin, so by default the
	// dispatcher strips both headers: one tenant cannot read or set another's
	// cookies. A tenant on its own host always gets its cookies.
	Cookies bool `json:"cookies,omitempty"`
	// Routes are the tenant's priced (or free) endpoints, in directory
	// order; see Route and PriceFor.
	Routes []Route `json:"routes,omitempty"`

	// rt is the compiled form of Routes, built by NewDirectory (nil when
	// there are no routes). It is immutable and may be shared by copies.
	rt *routeTable
}

// Charges reports whether the tenant charges for anything: X402Enabled is
// set and either the tenant's own price or some route's price or maximum is
// positive. Whether one request must be paid is PriceFor(...).Charges.
func (t *Tenant) Charges() bool {
	if !t.X402Enabled {
		return false
	}
	if t.PriceUSD.IsPositive() {
		return true
	}
	if rt := t.table(); rt != nil {
		return rt.charges
	}
	for i := range t.Routes {
		r := &t.Routes[i]
		if r.PriceUSD != nil && r.PriceUSD.IsPositive() || r.MaxPriceUSD != nil && r.MaxPriceUSD.IsPositive() {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of t: changing the copy's slices, routes or
// discovery documents never changes t.
func (t *Tenant) Clone() Tenant {
	c := *t
	c.Hosts = cloneStrings(t.Hosts)
	c.Schemes = cloneStrings(t.Schemes)
	c.rt = nil
	if t.Routes != nil {
		c.Routes = make([]Route, len(t.Routes))
		for i, r := range t.Routes {
			c.Routes[i] = r.clone()
		}
	}
	return c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append(make([]string, 0, len(s)), s...)
}

// UsageLimit caps requests per calendar UTC day and month. Zero means no cap.
type UsageLimit struct {
	DailyRequests   int64 `json:"dailyRequests,omitempty"`
	MonthlyRequests int64 `json:"monthlyRequests,omitempty"`
}

// SpendLimit caps the settled amount per UTC day and month. Zero means no cap.
type SpendLimit struct {
	DailySpendUSD   decimal.Decimal `json:"dailySpendUsd"`
	MonthlySpendUSD decimal.Decimal `json:"monthlySpendUsd"`
}

// Rate is "Requests per WindowSeconds".
type Rate struct {
	Requests      int64 `json:"requests"`
	WindowSeconds int64 `json:"windowSeconds"`
}

// IsZero reports whether the rate is unset.
func (r Rate) IsZero() bool { return r.Requests <= 0 || r.WindowSeconds <= 0 }

// RateLimit holds the tenant's rate limits; unset ones take plan defaults.
type RateLimit struct {
	// PerCaller limits each caller of the tenant.
	PerCaller Rate `json:"perCaller"`
	// Global limits the tenant's traffic from all callers together.
	Global Rate `json:"global"`
}

// NormalizeHost lower-cases host and strips a port and a trailing dot. It
// returns ok false for a host that is empty, too long or has characters no
// host name or IP literal has.
func NormalizeHost(host string) (string, bool) {
	if host == "" || len(host) > 255 {
		return "", false
	}
	// Strip a port: "[v6]:port", "name:port".
	if host[0] == '[' {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		rest := host[end+1:]
		if rest != "" && (rest[0] != ':' || !allDigits(rest[1:])) {
			return "", false
		}
		host = host[:end+1]
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if strings.IndexByte(host[:i], ':') >= 0 || !allDigits(host[i+1:]) {
			return "", false
		}
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", false
	}
	lower := true
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c >= 'A' && c <= 'Z':
			lower = false
		case c == '[' || c == ']' || c == ':':
			if host[0] != '[' {
				return "", false
			}
		default:
			return "", false
		}
	}
	if !lower {
		host = strings.ToLower(host)
	}
	return host, true
}

func allDigits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
