package tenant

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// Limits of a route list, enforced when a directory is built.
const (
	// MaxRoutes is the most routes one tenant may list.
	MaxRoutes = 256
	// MaxRoutePathLen bounds a route's path pattern, in bytes.
	MaxRoutePathLen = 512
	// MaxRouteSegments bounds the segments of a route's path pattern.
	MaxRouteSegments = 32
	// MaxSchemes bounds a scheme list (the tenant's or a route's).
	MaxSchemes = 16
	// MaxDescriptionLen bounds a route's description, in bytes.
	MaxDescriptionLen = 1024
	// MaxMimeTypeLen bounds a route's mimeType, in bytes.
	MaxMimeTypeLen = 255
	// MaxDiscoveryLen bounds a route's discovery document, in bytes.
	MaxDiscoveryLen = 64 << 10
	// maxMethodLen bounds a route's method.
	maxMethodLen = 32
	// maxParamNameLen bounds the name of a :name segment.
	maxParamNameLen = 64
)

// DefaultScheme is the scheme a 402 offers when neither the route nor the
// tenant lists any.
const DefaultScheme = "exact"

// defaultSchemes is the scheme list of PriceFor when nothing is listed. It is
// shared: callers must not modify Priced.Schemes.
var defaultSchemes = []string{DefaultScheme}

// Route is one priced (or free) endpoint of a tenant's API (DESIGN section
// 13). Its JSON form is the directory's:
//
//	{"method": "GET", "path": "/forecast/:city", "priceUsd": "0.002",
//	 "maxPriceUsd": "0.01", "schemes": ["exact"], "description": "...",
//	 "mimeType": "application/json", "discovery": {...}}
//
// Path is the path the worker sees (after /t/<slug> is stripped). It starts
// with "/" and its segments are literals, ":name" (exactly one non-empty
// segment) or a final "*" (the rest of the path, possibly empty). The root
// pattern "/" is the only one with an empty segment: a pattern may not end
// in "/" nor contain "//", ".", ".." or "%" (literals are written decoded,
// and request paths are decoded before they are compared with them).
//
// Trailing slash rule: one trailing slash of a request path is ignored when
// matching, so the pattern "/rows" prices both "/rows" and "/rows/"; the
// pattern "/rows/*" prices "/rows" too (its "*" matches the empty rest).
type Route struct {
	// Method restricts the route to one HTTP method (an RFC 9110 token,
	// stored upper-case, compared case-insensitively; a GET route also
	// prices HEAD when no HEAD route matches). Empty means any method.
	Method string `json:"method,omitempty"`
	// Path is the path pattern; see the type's documentation.
	Path string `json:"path"`
	// PriceUSD overrides the tenant's price for this route; nil means the
	// tenant's price applies, zero makes the route free even when the
	// tenant charges. At most six decimal places.
	PriceUSD *decimal.Decimal `json:"priceUsd,omitempty"`
	// MaxPriceUSD is the ceiling for "upto" and the per-request maximum for
	// "batch-settlement"; nil means the effective price. It may not be
	// below the effective price.
	MaxPriceUSD *decimal.Decimal `json:"maxPriceUsd,omitempty"`
	// Schemes lists what the 402 offers for this route, in order; empty
	// means the tenant's Schemes, else ["exact"].
	Schemes []string `json:"schemes,omitempty"`
	// Description and MimeType feed the 402's resource description.
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
	// Discovery is a JSON object interpreted by the discovery package (the
	// Bazaar declaration of section 16). The directory keeps it compact.
	Discovery json.RawMessage `json:"discovery,omitempty"`
}

func (r Route) clone() Route {
	c := r
	if r.PriceUSD != nil {
		p := *r.PriceUSD
		c.PriceUSD = &p
	}
	if r.MaxPriceUSD != nil {
		p := *r.MaxPriceUSD
		c.MaxPriceUSD = &p
	}
	c.Schemes = cloneStrings(r.Schemes)
	if r.Discovery != nil {
		c.Discovery = append(json.RawMessage(nil), r.Discovery...)
	}
	return c
}

// Priced is what a request to one endpoint of a tenant costs. PriceFor never
// allocates.
type Priced struct {
	// Route is the matched route; nil when none matched (the tenant's price
	// applies). It is shared with the directory and must not be modified.
	Route *Route
	// Pattern is the matched route's path pattern, "" when none matched.
	// Analytics roll endpoints up by it.
	Pattern string
	// PriceUSD is the effective price.
	PriceUSD decimal.Decimal
	// MaxPriceUSD is the effective ceiling (>= PriceUSD).
	MaxPriceUSD decimal.Decimal
	// Schemes is the effective scheme list, never empty. It is shared and
	// must not be modified.
	Schemes []string
	// Description and MimeType are the matched route's, "" when none.
	Description string
	MimeType    string
	// Charges is X402Enabled && (PriceUSD > 0 || MaxPriceUSD > 0).
	Charges bool
}

// PriceFor returns what a request with this method and path costs. path is
// the worker's path (after /t/<slug> is stripped) in escaped form, as
// Resolution.Path has it; a query after "?" is ignored. Each segment is
// percent-decoded before it is compared with a route's literal, so
// "/r%6Fws" is priced as "/rows".
//
// The most specific route wins: segments are compared left to right, a
// literal before a ":name" before a "*"; a pattern that ends where the path
// ends before a "*" matching the empty rest; then, among routes of the same
// shape, one whose method matches before one without a method. No route
// matching: the tenant's own price and schemes.
//
// PriceFor is allocation-free on tenants of a Directory (Lookup, Resolve,
// Tenants), whose routes were compiled when the directory was built. On a
// Tenant value built elsewhere, or whose Routes slice was replaced since, it
// compiles the routes on every call, and prices by the tenant alone if they
// are invalid. Routes edited in place are not noticed: a directory's tenants
// are immutable, and a changed tenant goes through NewDirectory again.
func (t *Tenant) PriceFor(method, path string) Priced {
	rt := t.table()
	if rt == nil {
		if len(t.Routes) == 0 {
			return t.tenantPriced()
		}
		var err error
		if rt, err = compileRoutes(t); err != nil {
			return t.tenantPriced()
		}
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		path = "/"
	}
	if path[0] != '/' {
		return t.tenantPriced()
	}
	rest, more := path[1:], len(path) > 1
	if more && rest[len(rest)-1] == '/' {
		rest = rest[:len(rest)-1]
	}
	if cr := rt.root.match(method, rest, more); cr != nil {
		return cr.priced
	}
	return t.tenantPriced()
}

// table returns t's compiled routes when they are current: built from the
// very Routes slice t holds.
func (t *Tenant) table() *routeTable {
	rt := t.rt
	if rt == nil || len(t.Routes) != rt.n || rt.n == 0 || &t.Routes[0] != rt.first {
		return nil
	}
	return rt
}

func (t *Tenant) tenantPriced() Priced {
	s := t.Schemes
	if len(s) == 0 {
		s = defaultSchemes
	}
	return Priced{
		PriceUSD:    t.PriceUSD,
		MaxPriceUSD: t.PriceUSD,
		Schemes:     s,
		Charges:     t.X402Enabled && t.PriceUSD.IsPositive(),
	}
}

// routeTable is a tenant's routes compiled into a segment trie.
type routeTable struct {
	root    node
	first   *Route // &Routes[0] at compile time, to detect a replaced slice
	n       int
	charges bool // some route has a positive price or maximum
}

type node struct {
	// keys are the literal children's segments, sorted, and kids their
	// nodes: a binary search over a few short strings beats hashing.
	keys  []string
	kids  []*node
	param *node
	end   *terminal // routes whose pattern ends at this node
	wild  *terminal // routes whose pattern ends in "*" after this node
}

type terminal struct {
	methods []*compiledRoute // routes with a method, in directory order
	any     *compiledRoute   // the route without a method
}

type compiledRoute struct {
	method string
	priced Priced
}

func (n *node) match(method, rest string, more bool) *compiledRoute {
	if !more {
		if r := n.end.pick(method); r != nil {
			return r
		}
		return n.wild.pick(method)
	}
	seg, next, nmore := rest, "", false
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		seg, next, nmore = rest[:i], rest[i+1:], true
	}
	if len(n.keys) > 0 {
		if c := n.lit(seg); c != nil {
			if r := c.match(method, next, nmore); r != nil {
				return r
			}
		}
	}
	if n.param != nil && seg != "" {
		if r := n.param.match(method, next, nmore); r != nil {
			return r
		}
	}
	return n.wild.pick(method)
}

// lit finds the literal child for an escaped request segment. Literals
// match without regard to ASCII case, and a ";params" suffix is ignored:
// worker stacks commonly route "/Premium" or "/premium;x" to "/premium", so
// pricing them any other way would serve a priced route at another price.
func (n *node) lit(seg string) *node {
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; c == '%' || c == ';' || c >= 'A' && c <= 'Z' {
			return n.litDecoded(seg)
		}
	}
	lo, hi := 0, len(n.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if n.keys[m] < seg {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(n.keys) && n.keys[lo] == seg {
		return n.kids[lo]
	}
	return nil
}

// child is lit for a literal segment, at compile time.
func (n *node) child(seg string) *node {
	i, found := slices.BinarySearch(n.keys, seg)
	if found {
		return n.kids[i]
	}
	c := &node{}
	n.keys = slices.Insert(n.keys, i, seg)
	n.kids = slices.Insert(n.kids, i, c)
	return c
}

func (n *node) litDecoded(seg string) *node {
	var buf [MaxRoutePathLen]byte
	k := 0
	for i := 0; i < len(seg); i++ {
		if k == len(buf) {
			return nil // longer than any literal
		}
		c := seg[i]
		if c == ';' {
			break // path parameters are not part of the segment's name
		}
		if c == '%' {
			if i+2 >= len(seg) {
				return nil
			}
			hi, ok1 := unhex(seg[i+1])
			lo, ok2 := unhex(seg[i+2])
			if !ok1 || !ok2 {
				return nil
			}
			c = hi<<4 | lo
			i += 2
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[k] = c
		k++
	}
	dec := buf[:k]
	lo, hi := 0, len(n.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if compareBytes(dec, n.keys[m]) > 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(n.keys) && compareBytes(dec, n.keys[lo]) == 0 {
		return n.kids[lo]
	}
	return nil
}

// compareBytes is strings.Compare(string(b), s) without the conversion.
func compareBytes(b []byte, s string) int {
	for i := 0; i < len(b) && i < len(s); i++ {
		if b[i] != s[i] {
			if b[i] < s[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(b) < len(s):
		return -1
	case len(b) > len(s):
		return 1
	}
	return 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (t *terminal) pick(method string) *compiledRoute {
	if t == nil {
		return nil
	}
	for _, r := range t.methods {
		if strings.EqualFold(r.method, method) {
			return r
		}
	}
	if strings.EqualFold(method, "HEAD") {
		for _, r := range t.methods {
			if strings.EqualFold(r.method, "GET") {
				return r
			}
		}
	}
	return t.any
}

// compileRoutes validates t's routes (already normalized by normalizeRoutes)
// and builds their trie. Two routes are ambiguous, and refused, when they
// have the same method (or both none) and the same shape: the same number of
// segments, the same literal at every literal position, ":name" at the same
// positions (names do not count) and "*" or not at the end. Routes that differ
// in shape never tie: wherever they both match a request, the first segment
// where their shapes differ ranks one above the other.
func compileRoutes(t *Tenant) (*routeTable, error) {
	if len(t.Routes) == 0 {
		return nil, nil
	}
	rt := &routeTable{first: &t.Routes[0], n: len(t.Routes)}
	shapes := make(map[string]int, len(t.Routes))
	for i := range t.Routes {
		r := &t.Routes[i]
		segs, err := splitPattern(r.Path)
		if err != nil {
			return nil, &ValidationError{Tenant: t.Slug, Field: routeField(i, "path"), Reason: err.Error()}
		}
		key := r.Method + " " + shapeKey(segs)
		if j, dup := shapes[key]; dup {
			return nil, &ValidationError{Tenant: t.Slug, Field: routeField(i, ""), Reason: fmt.Sprintf(
				"routes[%d] and routes[%d] are ambiguous: %q and %q match the same requests with the same %s",
				j, i, t.Routes[j].Path, r.Path, methodWords(r.Method))}
		}
		shapes[key] = i
		cr := &compiledRoute{method: r.Method, priced: priceRoute(t, r)}
		if cr.priced.PriceUSD.IsPositive() || cr.priced.MaxPriceUSD.IsPositive() {
			rt.charges = true
		}
		n := &rt.root
		wild := false
		for _, s := range segs {
			switch {
			case s == "*":
				wild = true
			case s[0] == ':':
				if n.param == nil {
					n.param = &node{}
				}
				n = n.param
			default:
				n = n.child(strings.ToLower(s))
			}
		}
		term := &n.end
		if wild {
			term = &n.wild
		}
		if *term == nil {
			*term = &terminal{}
		}
		if r.Method == "" {
			(*term).any = cr
		} else {
			(*term).methods = append((*term).methods, cr)
		}
	}
	return rt, nil
}

// routeField names a route's field in errors: "routes[2].path"; sub ""
// names the route itself. Built only when there is an error to report.
func routeField(i int, sub string) string {
	if sub == "" {
		return fmt.Sprintf("routes[%d]", i)
	}
	return fmt.Sprintf("routes[%d].%s", i, sub)
}

func methodWords(m string) string {
	if m == "" {
		return "(any) method"
	}
	return "method " + m
}

// priceRoute works out a route's effective price.
func priceRoute(t *Tenant, r *Route) Priced {
	p := Priced{Route: r, Pattern: r.Path, PriceUSD: t.PriceUSD, Description: r.Description, MimeType: r.MimeType}
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
		p.Schemes = defaultSchemes
	}
	p.Charges = t.X402Enabled && (p.PriceUSD.IsPositive() || p.MaxPriceUSD.IsPositive())
	return p
}

// shapeKey is a pattern's shape: literals lower-cased (literals match
// without regard to case), ":" for a parameter, "*" for the rest. Literals
// never start with ":" nor equal "*".
func shapeKey(segs []string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		switch {
		case s[0] == ':':
			b.WriteByte(':')
		default:
			b.WriteString(strings.ToLower(s))
		}
	}
	return b.String()
}

// splitPattern checks a path pattern and returns its segments (none for "/").
func splitPattern(p string) ([]string, error) {
	switch {
	case p == "":
		return nil, fmt.Errorf("is required")
	case len(p) > MaxRoutePathLen:
		return nil, fmt.Errorf("longer than %d bytes", MaxRoutePathLen)
	case p[0] != '/':
		return nil, fmt.Errorf("%q does not start with /", p)
	case p == "/":
		return nil, nil
	case p[len(p)-1] == '/':
		return nil, fmt.Errorf("%q ends with /: write %q, which matches a trailing slash too", p, strings.TrimRight(p, "/"))
	case !utf8.ValidString(p):
		return nil, fmt.Errorf("%q is not valid UTF-8", p)
	}
	segs := strings.Split(p[1:], "/")
	if len(segs) > MaxRouteSegments {
		return nil, fmt.Errorf("has more than %d segments", MaxRouteSegments)
	}
	names := map[string]bool{}
	for i, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("%q has an empty segment", p)
		case s == "*":
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%q: * must be the last segment", p)
			}
		case s[0] == ':':
			name := s[1:]
			if !validParamName(name) {
				return nil, fmt.Errorf("%q: %q is not a parameter name (a letter or _, then letters, digits or _)", p, s)
			}
			if names[name] {
				return nil, fmt.Errorf("%q: parameter %q appears twice", p, name)
			}
			names[name] = true
		case s == "." || s == "..":
			return nil, fmt.Errorf("%q has a dot segment", p)
		default:
			for j := 0; j < len(s); j++ {
				c := s[j]
				if c <= ' ' || c == 0x7f || c == '%' || c == '*' || c == '?' || c == '#' || c == '\\' {
					return nil, fmt.Errorf("%q: segment %q has %q (literals are written decoded, without %%, *, ?, #, \\ or spaces)", p, s, string(c))
				}
			}
		}
	}
	return segs, nil
}

func validParamName(s string) bool {
	if s == "" || len(s) > maxParamNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidSchemeName reports whether s is a well-formed scheme name, that is
// whether it matches ^[a-z0-9][a-z0-9-]{0,31}$. Whether a scheme of that name
// is configured is the payment stage's question.
func ValidSchemeName(s string) bool {
	if s == "" || len(s) > 32 {
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

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func checkSchemes(list []string) error {
	if len(list) > MaxSchemes {
		return fmt.Errorf("lists more than %d schemes", MaxSchemes)
	}
	for i, s := range list {
		if !ValidSchemeName(s) {
			return fmt.Errorf("%q does not match ^[a-z0-9][a-z0-9-]{0,31}$", s)
		}
		for _, prev := range list[:i] {
			if prev == s {
				return fmt.Errorf("%q is listed twice", s)
			}
		}
	}
	return nil
}

func checkMoney(d decimal.Decimal) error {
	if d.IsNegative() {
		return fmt.Errorf("%s is negative", d)
	}
	if !d.Equal(d.Truncate(MaxPriceDecimals)) {
		return fmt.Errorf("%s has more than %d decimal places", d, MaxPriceDecimals)
	}
	if d.GreaterThan(decimal.New(1, 12)) {
		return fmt.Errorf("%s is larger than 10^12 USD", d)
	}
	return nil
}

func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("has control characters")
		}
	}
	return nil
}

// normalizeRoutes validates the fields of t's routes and its scheme list, one
// by one, and puts them in the directory's canonical form (method upper-case,
// empty lists nil, discovery compact). t's slices must already be its own.
// Path patterns and ambiguity are checked by compileRoutes.
func normalizeRoutes(t *Tenant) error {
	fail := func(field, reason string) error {
		return &ValidationError{Tenant: t.Slug, Field: field, Reason: reason}
	}
	if len(t.Schemes) == 0 {
		t.Schemes = nil
	}
	if err := checkSchemes(t.Schemes); err != nil {
		return fail("schemes", err.Error())
	}
	if len(t.Routes) > MaxRoutes {
		return fail("routes", fmt.Sprintf("lists %d routes, more than %d", len(t.Routes), MaxRoutes))
	}
	if len(t.Routes) == 0 {
		t.Routes = nil
	}
	for i := range t.Routes {
		r := &t.Routes[i]
		if r.Method != "" {
			if len(r.Method) > maxMethodLen {
				return fail(routeField(i, "method"), fmt.Sprintf("longer than %d bytes", maxMethodLen))
			}
			for j := 0; j < len(r.Method); j++ {
				if !isTokenChar(r.Method[j]) {
					return fail(routeField(i, "method"), fmt.Sprintf("%q is not an HTTP method token", r.Method))
				}
			}
			r.Method = strings.ToUpper(r.Method)
		}
		price := t.PriceUSD
		if r.PriceUSD != nil {
			if err := checkMoney(*r.PriceUSD); err != nil {
				return fail(routeField(i, "priceUsd"), err.Error())
			}
			price = *r.PriceUSD
		}
		if r.MaxPriceUSD != nil {
			if err := checkMoney(*r.MaxPriceUSD); err != nil {
				return fail(routeField(i, "maxPriceUsd"), err.Error())
			}
			if r.MaxPriceUSD.LessThan(price) {
				return fail(routeField(i, "maxPriceUsd"), fmt.Sprintf("%s is below the route's price %s", r.MaxPriceUSD, price))
			}
		}
		if len(r.Schemes) == 0 {
			r.Schemes = nil
		}
		if err := checkSchemes(r.Schemes); err != nil {
			return fail(routeField(i, "schemes"), err.Error())
		}
		if err := checkText(r.Description, MaxDescriptionLen); err != nil {
			return fail(routeField(i, "description"), err.Error())
		}
		if err := checkText(r.MimeType, MaxMimeTypeLen); err != nil {
			return fail(routeField(i, "mimeType"), err.Error())
		}
		if len(r.Discovery) > 0 {
			if len(r.Discovery) > MaxDiscoveryLen {
				return fail(routeField(i, "discovery"), fmt.Sprintf("longer than %d bytes", MaxDiscoveryLen))
			}
			trimmed := bytes.TrimSpace(r.Discovery)
			if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
				return fail(routeField(i, "discovery"), "must be a JSON object")
			}
			// Marshalling a RawMessage compacts and escapes it as every
			// later marshal will, so the stored form round-trips exactly.
			canon, err := json.Marshal(json.RawMessage(trimmed))
			if err != nil {
				return fail(routeField(i, "discovery"), err.Error())
			}
			r.Discovery = canon
		} else {
			r.Discovery = nil
		}
	}
	return nil
}
