package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
)

// Errors of tenant resolution.
var (
	// ErrNotFound means no tenant owns the host or the /t/<slug>/ path.
	ErrNotFound = errors.New("tenant: not found")
	// ErrBadRequest means the host or path cannot be read: a malformed or
	// oversized host, a bad slug, or a tenant path a decoder could turn
	// into another one (dot segments in any encoding, an encoded slash, a
	// backslash raw or encoded). The dispatcher answers 400 bad_request.
	ErrBadRequest = errors.New("tenant: bad request")
)

// Directory is an immutable, validated set of tenants indexed by slug and
// host. Build one with ParseDirectory or NewDirectory; share it freely.
type Directory struct {
	tenants []*Tenant // sorted by slug
	bySlug  map[string]*Tenant
	byHost  map[string]*Tenant
}

// NewDirectory validates tenants and indexes them. Slugs and hosts must be
// unique across the directory.
func NewDirectory(tenants []Tenant) (*Directory, error) {
	d := &Directory{
		bySlug: make(map[string]*Tenant, len(tenants)),
		byHost: make(map[string]*Tenant, len(tenants)),
	}
	for i := range tenants {
		t := tenants[i].Clone() // the directory owns its tenants
		if !ValidSlug(t.Slug) {
			return nil, &ValidationError{Tenant: t.Slug, Field: "slug", Reason: fmt.Sprintf("%q does not match ^[a-z0-9][a-z0-9-]{0,62}$", t.Slug)}
		}
		if t.WorkerName == "" {
			return nil, &ValidationError{Tenant: t.Slug, Field: "workerName", Reason: "is required"}
		}
		if t.PriceUSD.IsNegative() {
			return nil, &ValidationError{Tenant: t.Slug, Field: "priceUsd", Reason: "is negative"}
		}
		if !t.PriceUSD.Equal(t.PriceUSD.Truncate(MaxPriceDecimals)) {
			return nil, &ValidationError{Tenant: t.Slug, Field: "priceUsd", Reason: fmt.Sprintf("has more than %d decimal places", MaxPriceDecimals)}
		}
		if err := normalizeRoutes(&t); err != nil {
			return nil, err
		}
		rt, err := compileRoutes(&t)
		if err != nil {
			return nil, err
		}
		t.rt = rt
		if _, dup := d.bySlug[t.Slug]; dup {
			return nil, &ValidationError{Tenant: t.Slug, Field: "slug", Reason: "duplicate slug"}
		}
		tp := &t
		d.bySlug[t.Slug] = tp
		for j, h := range t.Hosts {
			nh, ok := NormalizeHost(h)
			if !ok {
				return nil, &ValidationError{Tenant: t.Slug, Field: "hosts", Reason: fmt.Sprintf("%q is not a valid host name", h)}
			}
			t.Hosts[j] = nh
			if other, dup := d.byHost[nh]; dup {
				return nil, &ValidationError{Tenant: t.Slug, Field: "hosts", Reason: fmt.Sprintf("duplicate host %q (also tenant %q)", nh, other.Slug)}
			}
			d.byHost[nh] = tp
		}
		d.tenants = append(d.tenants, tp)
	}
	sort.Slice(d.tenants, func(i, j int) bool { return d.tenants[i].Slug < d.tenants[j].Slug })
	return d, nil
}

// Len returns the number of tenants.
func (d *Directory) Len() int { return len(d.tenants) }

// Tenants returns deep copies of the tenants, sorted by slug. Each copy has
// its routes compiled, so PriceFor on it is as fast as on the directory's.
func (d *Directory) Tenants() []Tenant {
	out := make([]Tenant, len(d.tenants))
	for i, t := range d.tenants {
		out[i] = t.Clone()
		// The routes were validated when the directory was built.
		out[i].rt, _ = compileRoutes(&out[i])
	}
	return out
}

// Lookup returns the tenant with the given slug. The tenant is shared and
// must not be modified.
func (d *Directory) Lookup(slug string) (*Tenant, bool) {
	t, ok := d.bySlug[slug]
	return t, ok
}

// MarshalJSON encodes the directory in the registry form {"tenants":[...]},
// which ParseDirectory reads back to an equal directory.
func (d *Directory) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Tenants []Tenant `json:"tenants"`
	}{d.Tenants()})
}

// Resolution is the outcome of resolving a request to a tenant.
type Resolution struct {
	Tenant *Tenant
	// Path is the path to forward, still escaped: the request path when the
	// tenant was found by host, the rest after /t/<slug> otherwise ("/" when
	// nothing follows).
	Path string
	// ByHost tells whether the host (rather than the path) matched.
	ByHost bool
}

const pathPrefix = "/t/"

// Resolve finds the tenant for a request: an exact host match first (the
// host lower-cased, its port stripped), then a path /t/<slug>/<rest>. path is
// the escaped request path (url.URL.EscapedPath). Errors wrap ErrNotFound or
// ErrBadRequest; the tenant path (by host or by /t/<slug>) is refused with
// ErrBadRequest when it holds a "." or ".." segment (plain or %2e-encoded in
// any case), an encoded slash (%2f, %2F) or a backslash (raw, %5c, %5C).
func (d *Directory) Resolve(host, path string) (Resolution, error) {
	h, ok := NormalizeHost(host)
	if !ok {
		if host == "" {
			return Resolution{}, fmt.Errorf("%w: missing Host", ErrBadRequest)
		}
		return Resolution{}, fmt.Errorf("%w: malformed Host", ErrBadRequest)
	}
	if t, ok := d.byHost[h]; ok {
		if err := checkPath(path); err != nil {
			return Resolution{}, err
		}
		return Resolution{Tenant: t, Path: path, ByHost: true}, nil
	}
	if !strings.HasPrefix(path, pathPrefix) {
		return Resolution{}, errNoTenant
	}
	rest := path[len(pathPrefix):]
	slug, tail := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		slug, tail = rest[:i], rest[i:]
	}
	if !ValidSlug(slug) {
		return Resolution{}, errBadSlug
	}
	t, ok := d.bySlug[slug]
	if !ok {
		return Resolution{}, errNoTenant
	}
	if err := checkPath(tail); err != nil {
		return Resolution{}, err
	}
	return Resolution{Tenant: t, Path: tail}, nil
}

// Preallocated so that the hot path's refusals do not allocate.
var (
	errNoTenant     = fmt.Errorf("%w: no tenant for this host or path", ErrNotFound)
	errBadSlug      = fmt.Errorf("%w: bad tenant slug in path", ErrBadRequest)
	errDotSegment   = fmt.Errorf("%w: dot segments are not allowed in the path", ErrBadRequest)
	errEncodedSlash = fmt.Errorf("%w: an encoded slash (%%2F) is not allowed in the path", ErrBadRequest)
	errBackslash    = fmt.Errorf("%w: a backslash (raw or %%5C) is not allowed in the path", ErrBadRequest)
	errEmptySegment = fmt.Errorf("%w: an empty path segment (//) is not allowed in the path", ErrBadRequest)
)

// checkPath refuses an escaped tenant path that could reach another path
// once a worker, proxy or framework decodes or normalizes it: a segment that
// is "." or ".." plain or percent-encoded in any case (%2e, %2E), an encoded
// slash (%2f, %2F) that a decoder would turn into a separator, and a
// backslash, raw or encoded (%5c, %5C), which some servers treat as one,
// and an empty segment ("//"), which servers merge.
// Checking stops at a "?" (an escaped path has none; a request URI's query
// is not the path). Other escapes (%20, %C3%A9) pass.
func checkPath(p string) error {
	segStart := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' || p[i] == '?' {
			if isDots(p[segStart:i]) {
				return errDotSegment
			}
			// "//" inside the path: servers merge it into "/", so it
			// would be priced as one path and served as another. (A
			// trailing "/" before the end or "?" is an empty last
			// segment, which is fine.)
			if i < len(p) && p[i] == '/' && i == segStart && segStart > 0 {
				return errEmptySegment
			}
			if i < len(p) && p[i] == '?' {
				return nil
			}
			segStart = i + 1
			continue
		}
		switch p[i] {
		case '\\':
			return errBackslash
		case '%':
			if i+2 < len(p) {
				switch hi, lo := p[i+1], p[i+2]|0x20; {
				case hi == '2' && lo == 'f':
					return errEncodedSlash
				case hi == '5' && lo == 'c':
					return errBackslash
				}
			}
		}
	}
	return nil
}

func isDots(seg string) bool {
	if len(seg) == 0 || len(seg) > 6 {
		return false
	}
	dots := 0
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.':
			i++
		case seg[i] == '%' && i+2 < len(seg) && seg[i+1] == '2' && seg[i+2]|0x20 == 'e':
			i += 3
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

// ResolveTenant resolves host and path against d; see Directory.Resolve.
func ResolveTenant(d *Directory, host, path string) (Resolution, error) {
	return d.Resolve(host, path)
}

// Registry holds the current directory and swaps it atomically while
// requests are being served. The zero Registry holds an empty directory.
type Registry struct {
	p atomic.Pointer[Directory]
}

var emptyDirectory = &Directory{bySlug: map[string]*Tenant{}, byHost: map[string]*Tenant{}}

// NewRegistry returns a registry serving d (an empty directory when nil).
func NewRegistry(d *Directory) *Registry {
	r := &Registry{}
	if d != nil {
		r.p.Store(d)
	}
	return r
}

// Load returns the directory in force.
func (r *Registry) Load() *Directory {
	if d := r.p.Load(); d != nil {
		return d
	}
	return emptyDirectory
}

// Swap puts d in force and returns the directory it replaced.
func (r *Registry) Swap(d *Directory) *Directory {
	if d == nil {
		d = emptyDirectory
	}
	old := r.p.Swap(d)
	if old == nil {
		old = emptyDirectory
	}
	return old
}

// Replace parses data and, only when it is valid, puts it in force. On error
// the previous directory stays.
func (r *Registry) Replace(data []byte) (*Directory, error) {
	d, err := ParseDirectory(data)
	if err != nil {
		return nil, err
	}
	r.Swap(d)
	return d, nil
}

// Store is the port of a persistent tenant directory source (the tenants
// table of the SQL adapters, adapters/memory.Tenants). Implementations are
// safe for concurrent use; package tenanttest is their conformance suite.
type Store interface {
	// LoadTenants returns every stored tenant, sorted by slug whatever order
	// they were saved in, each as NewDirectory holds it (hosts normalised,
	// route methods upper-case, discovery compact); an empty store returns
	// no tenants and no error. The caller owns the result.
	LoadTenants(ctx context.Context) ([]Tenant, error)
	// SaveTenants replaces the stored tenants with tenants, atomically: a
	// concurrent LoadTenants sees the old set or the new one, never a mix.
	// A set NewDirectory refuses is not saved (the error wraps
	// ErrInvalidDirectory) and changes nothing.
	SaveTenants(ctx context.Context, tenants []Tenant) error
}

// Load reads a directory from a store, validating it like a parsed one.
func Load(ctx context.Context, s Store) (*Directory, error) {
	ts, err := s.LoadTenants(ctx)
	if err != nil {
		return nil, err
	}
	return NewDirectory(ts)
}
