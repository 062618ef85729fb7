package tenant_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/tenant"
)

// weatherDirectory is DESIGN section 13's example, plus a free tenant.
const weatherDirectory = `{"tenants":[
 {"slug": "weather", "workerName": "w-weather", "x402Enabled": true, "priceUsd": "0.01",
  "schemes": ["exact", "upto"], "cookies": true,
  "routes": [
   {"method": "GET", "path": "/forecast/:city", "priceUsd": "0.002", "description": "7-day forecast",
    "mimeType": "application/json", "schemes": ["exact", "exact-permit2"],
    "discovery": {"queryParams": {"units": {"type": "string", "enum": ["metric", "imperial"]}},
                  "output": {"example": {"city": "Tokyo", "days": []}}}},
   {"path": "/llm/*", "schemes": ["upto", "batch-settlement"], "maxPriceUsd": "0.50"},
   {"method": "get", "path": "/health", "priceUsd": "0"}
 ]},
 {"slug": "free", "workerName": "w-free"}
]}`

func mustParse(t testing.TB, s string) *tenant.Directory {
	t.Helper()
	d, err := tenant.ParseDirectory([]byte(s))
	require.NoError(t, err)
	return d
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func TestRoutesParse(t *testing.T) {
	t.Parallel()
	d := mustParse(t, weatherDirectory)
	w, ok := d.Lookup("weather")
	require.True(t, ok)
	require.Equal(t, []string{"exact", "upto"}, w.Schemes)
	require.True(t, w.Cookies)
	require.Len(t, w.Routes, 3)
	f := w.Routes[0]
	require.Equal(t, "GET", f.Method)
	require.Equal(t, "/forecast/:city", f.Path)
	require.True(t, f.PriceUSD.Equal(dec("0.002")))
	require.Nil(t, f.MaxPriceUSD)
	require.Equal(t, []string{"exact", "exact-permit2"}, f.Schemes)
	require.Equal(t, "7-day forecast", f.Description)
	require.Equal(t, "application/json", f.MimeType)
	require.JSONEq(t, `{"queryParams":{"units":{"type":"string","enum":["metric","imperial"]}},"output":{"example":{"city":"Tokyo","days":[]}}}`, string(f.Discovery))
	require.NotContains(t, string(f.Discovery), " ", "discovery is kept compact")
	require.Nil(t, w.Routes[1].PriceUSD, "absent price: the tenant's")
	require.True(t, w.Routes[1].MaxPriceUSD.Equal(dec("0.5")))
	require.Equal(t, "GET", w.Routes[2].Method, "methods are stored upper-case")
	require.True(t, w.Routes[2].PriceUSD.IsZero())
	require.NotNil(t, w.Routes[2].PriceUSD, `"0" is a price, not an absence`)

	free, _ := d.Lookup("free")
	require.Nil(t, free.Routes)
	require.Nil(t, free.Schemes)
	require.False(t, free.Cookies)

	// The byHost/bySlug form reads routes the same way.
	var reg struct {
		Tenants []json.RawMessage `json:"tenants"`
	}
	require.NoError(t, json.Unmarshal([]byte(weatherDirectory), &reg))
	hf := mustParse(t, `{"bySlug":{"weather":`+string(reg.Tenants[0])+`},"byHost":{"free.example":{"slug":"free","workerName":"w-free"}}}`)
	hw, _ := hf.Lookup("weather")
	requireSameJSON(t, w, hw)
}

func TestPriceFor(t *testing.T) {
	t.Parallel()
	d := mustParse(t, weatherDirectory)
	w, _ := d.Lookup("weather")
	cases := []struct {
		method, path, pattern, price, max string
		schemes                           []string
		charges                           bool
	}{
		{"GET", "/forecast/tokyo", "/forecast/:city", "0.002", "0.002", []string{"exact", "exact-permit2"}, true},
		{"get", "/forecast/tokyo", "/forecast/:city", "0.002", "0.002", []string{"exact", "exact-permit2"}, true},
		{"HEAD", "/forecast/tokyo", "/forecast/:city", "0.002", "0.002", []string{"exact", "exact-permit2"}, true},
		{"GET", "/forecast/tokyo/", "/forecast/:city", "0.002", "0.002", []string{"exact", "exact-permit2"}, true},
		{"GET", "/forecast/S%C3%A3o%20Paulo?units=metric", "/forecast/:city", "0.002", "0.002", []string{"exact", "exact-permit2"}, true},
		{"POST", "/forecast/tokyo", "", "0.01", "0.01", []string{"exact", "upto"}, true}, // method does not match: tenant
		{"GET", "/forecast", "", "0.01", "0.01", []string{"exact", "upto"}, true},        // :city needs a segment
		{"GET", "/forecast//", "", "0.01", "0.01", []string{"exact", "upto"}, true},      // nor an empty one
		{"GET", "/forecast/a/b", "", "0.01", "0.01", []string{"exact", "upto"}, true},
		{"POST", "/llm", "/llm/*", "0.01", "0.5", []string{"upto", "batch-settlement"}, true},
		{"POST", "/llm/", "/llm/*", "0.01", "0.5", []string{"upto", "batch-settlement"}, true},
		{"POST", "/llm/v1/chat/completions", "/llm/*", "0.01", "0.5", []string{"upto", "batch-settlement"}, true},
		{"GET", "/health", "/health", "0", "0", []string{"exact", "upto"}, false},
		{"GET", "/he%61lth", "/health", "0", "0", []string{"exact", "upto"}, false},   // decoded before comparing
		{"GET", "/HEALTH", "/health", "0", "0", []string{"exact", "upto"}, false},     // literals match without case, as worker stacks route
		{"GET", "/health;x=1", "/health", "0", "0", []string{"exact", "upto"}, false}, // ;params are not part of the name
		{"GET", "/", "", "0.01", "0.01", []string{"exact", "upto"}, true},
		{"GET", "", "", "0.01", "0.01", []string{"exact", "upto"}, true},
		{"GET", "*", "", "0.01", "0.01", []string{"exact", "upto"}, true},
	}
	for _, c := range cases {
		p := w.PriceFor(c.method, c.path)
		name := c.method + " " + c.path
		require.Equal(t, c.pattern, p.Pattern, name)
		require.True(t, p.PriceUSD.Equal(dec(c.price)), "%s: price %s", name, p.PriceUSD)
		require.True(t, p.MaxPriceUSD.Equal(dec(c.max)), "%s: max %s", name, p.MaxPriceUSD)
		require.Equal(t, c.schemes, p.Schemes, name)
		require.Equal(t, c.charges, p.Charges, name)
		if c.pattern == "" {
			require.Nil(t, p.Route, name)
		} else {
			require.Same(t, &w.Routes[indexOf(w, c.pattern)], p.Route, name)
			require.Equal(t, p.Route.Description, p.Description)
			require.Equal(t, p.Route.MimeType, p.MimeType)
		}
	}

	// No routes, no schemes: the tenant's price and ["exact"].
	free, _ := d.Lookup("free")
	p := free.PriceFor("GET", "/anything")
	require.Equal(t, tenant.Priced{PriceUSD: free.PriceUSD, MaxPriceUSD: free.PriceUSD, Schemes: []string{"exact"}}, p)
}

func indexOf(t *tenant.Tenant, pattern string) int {
	for i, r := range t.Routes {
		if r.Path == pattern {
			return i
		}
	}
	return -1
}

// TestSpecificity: the most specific route wins, segment by segment, then
// by method.
var specificityRoutes = []string{
	`{"path":"/*","priceUsd":"0.9"}`,
	`{"path":"/a/*","priceUsd":"0.8"}`,
	`{"path":"/a/:x","priceUsd":"0.7"}`,
	`{"path":"/a/b","priceUsd":"0.6"}`,
	`{"method":"GET","path":"/a/b","priceUsd":"0.5"}`,
	`{"path":"/:x/b","priceUsd":"0.4"}`,
	`{"path":"/:x/:y/c","priceUsd":"0.3"}`,
	`{"method":"POST","path":"/a/:x/c","priceUsd":"0.2"}`,
	`{"path":"/a","priceUsd":"0.1"}`,
	`{"path":"/","priceUsd":"0.05"}`,
}

func TestSpecificity(t *testing.T) {
	t.Parallel()
	d := mustParse(t, `{"tenants":[{"slug":"s","workerName":"w","priceUsd":"1","x402Enabled":true,"routes":[`+strings.Join(specificityRoutes, ",")+`]}]}`)
	s, _ := d.Lookup("s")
	cases := []struct{ method, path, pattern string }{
		{"GET", "/a/b", "/a/b"},              // literal, literal; the GET route
		{"DELETE", "/a/b", "/a/b"},           // literal, literal; no method
		{"GET", "/a/z", "/a/:x"},             // literal before :name
		{"GET", "/z/b", "/:x/b"},             // :name, literal
		{"GET", "/a/b/c", "/a/*"},            // literal a beats :x; then :x (b) has no c for GET; * takes it
		{"POST", "/a/b/c", "/a/:x/c"},        // the POST route is the more specific
		{"GET", "/z/y/c", "/:x/:y/c"},        //
		{"GET", "/a", "/a"},                  // ending here beats * on the empty rest
		{"GET", "/a/", "/a"},                 // one trailing slash is ignored
		{"GET", "/a/b/c/d", "/a/*"},          //
		{"GET", "/z", "/*"},                  //
		{"GET", "/", "/"},                    // the root pattern
		{"GET", "//", "/*"},                  // an empty segment matches only *
		{"GET", "/z/y/x", "/*"},              //
		{"GET", "/%61/b", "/a/b"},            // %61 is a
		{"GET", "/a%2Fb", "/*"},              // %2F decodes to /, which no literal holds
		{"GET", "/a/%zz", "/a/:x"},           // a bad escape matches no literal, still a :name
		{"get", "/a/b", "/a/b"},              // methods compare case-insensitively
		{"HEAD", "/a/b", "/a/b"},             // HEAD takes the GET route
		{"OPTIONS", "/a/b/c/", "/a/*"},       //
		{"POST", "/a/b/c?x=/a/b", "/a/:x/c"}, // the query is not the path
	}
	for _, c := range cases {
		p := s.PriceFor(c.method, c.path)
		require.Equal(t, c.pattern, p.Pattern, "%s %s", c.method, c.path)
		require.NotNil(t, p.Route)
		want := *p.Route.PriceUSD
		require.True(t, want.Equal(p.PriceUSD))
		if c.method == "GET" && c.path == "/a/b" {
			require.Equal(t, "GET", p.Route.Method)
		}
		if c.method == "DELETE" && c.path == "/a/b" {
			require.Equal(t, "", p.Route.Method)
		}
		require.Same(t, referenceMatch(s, c.method, c.path), p.Route, "%s %s", c.method, c.path)
	}
}

// referenceMatch is the specificity rule written the slow, obvious way: rank
// every matching route by its segment kinds left to right (literal 3,
// :name 2, * 1, and 5 for "the pattern ended where the path did"), then by
// method (exact 3, GET for HEAD 2, none 1), and take the highest.
func referenceMatch(t *tenant.Tenant, method, path string) *tenant.Route {
	if i := strings.Index(path, "?"); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		path = "/"
	}
	if path[0] != '/' {
		return nil
	}
	var segs []string
	if rest := path[1:]; rest != "" {
		segs = strings.Split(strings.TrimSuffix(rest, "/"), "/")
	}
	var best *tenant.Route
	var bestRank []int
	for i := range t.Routes {
		r := &t.Routes[i]
		var pat []string
		if r.Path != "/" {
			pat = strings.Split(r.Path[1:], "/")
		}
		wild := len(pat) > 0 && pat[len(pat)-1] == "*"
		fixed := pat
		if wild {
			fixed = pat[:len(pat)-1]
		}
		if len(segs) < len(fixed) || !wild && len(segs) != len(fixed) {
			continue
		}
		var rank []int
		ok := true
		for j, ps := range fixed {
			switch {
			case ps[0] == ':':
				ok = ok && segs[j] != ""
				rank = append(rank, 2)
			default:
				seg := segs[j]
				if k := strings.IndexByte(seg, ';'); k >= 0 {
					seg = seg[:k]
				}
				dec, err := url.PathUnescape(seg)
				ok = ok && err == nil && asciiLower(dec) == asciiLower(ps)
				rank = append(rank, 3)
			}
		}
		if wild {
			rank = append(rank, 1)
		} else {
			rank = append(rank, 5)
		}
		switch {
		case r.Method == "":
			rank = append(rank, 1)
		case strings.EqualFold(r.Method, method):
			rank = append(rank, 3)
		case r.Method == "GET" && strings.EqualFold(method, "HEAD"):
			rank = append(rank, 2)
		default:
			ok = false
		}
		if ok && (best == nil || slices.Compare(rank, bestRank) > 0) {
			best, bestRank = r, rank
		}
	}
	return best
}

// TestAmbiguity: two routes tie when they have the same method (or both
// none) and the same shape; the directory is refused naming both.
func TestAmbiguity(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b      string
		ambiguous bool
	}{
		{`{"path":"/a/:x"}`, `{"path":"/a/:y"}`, true}, // parameter names do not count
		{`{"path":"/a"}`, `{"path":"/a"}`, true},       //
		{`{"method":"GET","path":"/a"}`, `{"method":"get","path":"/a"}`, true},
		{`{"path":"/llm/*"}`, `{"path":"/llm/*","priceUsd":"1"}`, true}, // prices do not count
		{`{"path":"/:a/:b/*"}`, `{"path":"/:c/:d/*"}`, true},
		{`{"method":"GET","path":"/a"}`, `{"path":"/a"}`, false}, // the method route wins
		{`{"method":"GET","path":"/a"}`, `{"method":"POST","path":"/a"}`, false},
		{`{"path":"/a/:x"}`, `{"path":"/:y/b"}`, false}, // /a/b: literal a ranks first
		{`{"path":"/a/:x"}`, `{"path":"/a/*"}`, false},
		{`{"path":"/a"}`, `{"path":"/a/*"}`, false},   // /a: ending here ranks first
		{`{"path":"/a/b"}`, `{"path":"/a/c"}`, false}, // disjoint
		{`{"path":"/:x"}`, `{"path":"/*"}`, false},
		{`{"path":"/"}`, `{"path":"/*"}`, false},
		{`{"path":"/:x"}`, `{"path":"/:x/:y"}`, false},
	}
	for _, c := range cases {
		js := fmt.Sprintf(`{"tenants":[{"slug":"s","workerName":"w","routes":[{"path":"/other"},%s,{"path":"/other2"},%s]}]}`, c.a, c.b)
		_, err := tenant.ParseDirectory([]byte(js))
		if !c.ambiguous {
			require.NoError(t, err, "%s %s", c.a, c.b)
			continue
		}
		var ve *tenant.ValidationError
		require.True(t, errors.As(err, &ve), "%s %s: %v", c.a, c.b, err)
		require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
		require.Equal(t, "s", ve.Tenant)
		require.Equal(t, "routes[3]", ve.Field)
		require.Contains(t, ve.Reason, "routes[1] and routes[3] are ambiguous")
	}
}

func TestRouteValidation(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", tenant.MaxDescriptionLen+1)
	cases := []struct{ name, tenantExtra, route, field string }{
		{"no path", ``, `{"method":"GET"}`, "routes[1].path"},
		{"relative path", ``, `{"path":"rows"}`, "routes[1].path"},
		{"empty segment", ``, `{"path":"/a//b"}`, "routes[1].path"},
		{"trailing slash", ``, `{"path":"/rows/"}`, "routes[1].path"},
		{"dot", ``, `{"path":"/a/./b"}`, "routes[1].path"},
		{"dot dot", ``, `{"path":"/a/.."}`, "routes[1].path"},
		{"percent", ``, `{"path":"/a%2Fb"}`, "routes[1].path"},
		{"star not last", ``, `{"path":"/*/a"}`, "routes[1].path"},
		{"star in literal", ``, `{"path":"/a*"}`, "routes[1].path"},
		{"backslash", ``, `{"path":"/a\\b"}`, "routes[1].path"},
		{"space", ``, `{"path":"/a b"}`, "routes[1].path"},
		{"query", ``, `{"path":"/a?b"}`, "routes[1].path"},
		{"bad param", ``, `{"path":"/:1x"}`, "routes[1].path"},
		{"empty param", ``, `{"path":"/a/:"}`, "routes[1].path"},
		{"param twice", ``, `{"path":"/:x/:x"}`, "routes[1].path"},
		{"too long", ``, `{"path":"/` + strings.Repeat("a", tenant.MaxRoutePathLen) + `"}`, "routes[1].path"},
		{"too deep", ``, `{"path":"` + strings.Repeat("/a", tenant.MaxRouteSegments+1) + `"}`, "routes[1].path"},
		{"method not a token", ``, `{"method":"GE T","path":"/a"}`, "routes[1].method"},
		{"method with slash", ``, `{"method":"GET/","path":"/a"}`, "routes[1].method"},
		{"negative price", ``, `{"path":"/a","priceUsd":"-1"}`, "routes[1].priceUsd"},
		{"seven decimals", ``, `{"path":"/a","priceUsd":0.0000001}`, "routes[1].priceUsd"},
		{"price not a number", ``, `{"path":"/a","priceUsd":"cheap"}`, "routes[1].priceUsd"},
		{"max below price", ``, `{"path":"/a","priceUsd":"0.02","maxPriceUsd":"0.01"}`, "routes[1].maxPriceUsd"},
		{"max below tenant price", `"priceUsd":"0.05",`, `{"path":"/a","maxPriceUsd":"0.01"}`, "routes[1].maxPriceUsd"},
		{"max seven decimals", ``, `{"path":"/a","maxPriceUsd":"0.0000001"}`, "routes[1].maxPriceUsd"},
		{"scheme name", ``, `{"path":"/a","schemes":["Exact"]}`, "routes[1].schemes"},
		{"scheme too long", ``, `{"path":"/a","schemes":["` + strings.Repeat("a", 33) + `"]}`, "routes[1].schemes"},
		{"scheme twice", ``, `{"path":"/a","schemes":["exact","upto","exact"]}`, "routes[1].schemes"},
		{"schemes not strings", ``, `{"path":"/a","schemes":[1]}`, "routes[1].schemes"},
		{"description too long", ``, `{"path":"/a","description":"` + long + `"}`, "routes[1].description"},
		{"mime control char", ``, `{"path":"/a","mimeType":"text/plain\u0001"}`, "routes[1].mimeType"},
		{"discovery array", ``, `{"path":"/a","discovery":[1]}`, "routes[1].discovery"},
		{"discovery string", ``, `{"path":"/a","discovery":"x"}`, "routes[1].discovery"},
		{"route not object", ``, `"/a"`, "routes[1]"},
		{"tenant schemes", `"schemes":["exact","exact"],`, `{"path":"/a"}`, "schemes"},
		{"tenant schemes shape", `"schemes":"exact",`, `{"path":"/a"}`, "schemes"},
	}
	for _, c := range cases {
		js := fmt.Sprintf(`{"tenants":[{"slug":"s","workerName":"w",%s"routes":[{"path":"/ok"},%s]}]}`, c.tenantExtra, c.route)
		_, err := tenant.ParseDirectory([]byte(js))
		var ve *tenant.ValidationError
		require.True(t, errors.As(err, &ve), "%s: %v", c.name, err)
		require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
		require.Equal(t, "s", ve.Tenant, c.name)
		require.Equal(t, c.field, ve.Field, "%s: %v", c.name, err)
		require.Contains(t, err.Error(), c.field)
	}
	// routes must be an array, of at most MaxRoutes.
	_, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"s","workerName":"w","routes":{}}]}`))
	requireField(t, err, "routes")
	many := make([]string, tenant.MaxRoutes+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"path":"/r%d"}`, i)
	}
	_, err = tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"s","workerName":"w","routes":[` + strings.Join(many, ",") + `]}]}`))
	requireField(t, err, "routes")
	_, err = tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"s","workerName":"w","routes":[` + strings.Join(many[:tenant.MaxRoutes], ",") + `]}]}`))
	require.NoError(t, err, "exactly MaxRoutes is fine")

	// NewDirectory holds tenants built in Go to the same rules.
	neg := dec("-1")
	_, err = tenant.NewDirectory([]tenant.Tenant{{Slug: "s", WorkerName: "w", Routes: []tenant.Route{{Path: "/a"}, {Path: "/b", PriceUSD: &neg}}}})
	requireField(t, err, "routes[1].priceUsd")
	_, err = tenant.NewDirectory([]tenant.Tenant{{Slug: "s", WorkerName: "w", Routes: []tenant.Route{{Path: "/a", Discovery: json.RawMessage(`{"x":`)}}}})
	requireField(t, err, "routes[0].discovery")
	_, err = tenant.NewDirectory([]tenant.Tenant{{Slug: "s", WorkerName: "w", Routes: make([]tenant.Route, tenant.MaxRoutes+1)}})
	requireField(t, err, "routes")
}

func requireField(t *testing.T, err error, field string) {
	t.Helper()
	var ve *tenant.ValidationError
	require.True(t, errors.As(err, &ve), "%v", err)
	require.Equal(t, field, ve.Field, "%v", err)
}

// TestChargesForAnything: Charges is true when anything can cost money.
func TestChargesForAnything(t *testing.T) {
	t.Parallel()
	d := mustParse(t, `{"tenants":[
	 {"slug":"a","workerName":"w","x402Enabled":true,"routes":[{"path":"/paid","priceUsd":"0.001"}]},
	 {"slug":"b","workerName":"w","x402Enabled":true,"routes":[{"path":"/upto","maxPriceUsd":"0.5"}]},
	 {"slug":"c","workerName":"w","x402Enabled":true,"routes":[{"path":"/free","priceUsd":"0"}]},
	 {"slug":"d","workerName":"w","x402Enabled":false,"priceUsd":"1","routes":[{"path":"/paid","priceUsd":"1"}]},
	 {"slug":"e","workerName":"w","x402Enabled":true,"priceUsd":"0.01","routes":[{"path":"/free","priceUsd":"0"}]}]}`)
	want := map[string]bool{"a": true, "b": true, "c": false, "d": false, "e": true}
	for slug, charges := range want {
		tn, _ := d.Lookup(slug)
		require.Equal(t, charges, tn.Charges(), slug)
		cp := tn.Clone() // uncompiled: the same answer from the routes
		require.Equal(t, charges, cp.Charges(), slug)
	}
	a, _ := d.Lookup("a")
	require.True(t, a.PriceFor("GET", "/paid").Charges)
	require.False(t, a.PriceFor("GET", "/other").Charges, "a free tenant's unrouted path is free")
	b, _ := d.Lookup("b")
	p := b.PriceFor("POST", "/upto")
	require.True(t, p.Charges, "a positive maximum charges")
	require.True(t, p.PriceUSD.IsZero())
	e, _ := d.Lookup("e")
	require.False(t, e.PriceFor("GET", "/free").Charges, `"0" frees a route of a charging tenant`)
	require.True(t, e.PriceFor("GET", "/x").Charges)
	dd, _ := d.Lookup("d")
	require.False(t, dd.PriceFor("GET", "/paid").Charges, "x402 off charges nothing")
}

// TestRoundTripExact: parse(marshal(d)) equals d, routes, schemes and cookies
// included, and marshalling again gives the same bytes.
func TestRoundTripExact(t *testing.T) {
	t.Parallel()
	for _, src := range []string{weatherDirectory, registryForm, hostForm} {
		a := mustParse(t, src)
		ja, err := a.MarshalJSON()
		require.NoError(t, err)
		b := mustParse(t, string(ja))
		jb, err := b.MarshalJSON()
		require.NoError(t, err)
		require.Equal(t, string(ja), string(jb))
		ta, tb := a.Tenants(), b.Tenants()
		require.Len(t, tb, len(ta))
		for i := range ta {
			requireSameTenant(t, ta[i], tb[i])
		}
	}
	w, _ := mustParse(t, weatherDirectory).Lookup("weather")
	out, err := json.Marshal(w)
	require.NoError(t, err)
	require.Contains(t, string(out), `"cookies":true`)
	require.Contains(t, string(out), `"schemes":["exact","upto"]`)
	require.Contains(t, string(out), `{"method":"GET","path":"/health","priceUsd":"0"}`)
}

// requireSameTenant compares two tenants field by field, decimals by value.
func requireSameTenant(t *testing.T, a, b tenant.Tenant) {
	t.Helper()
	requireSameJSON(t, &a, &b)
	require.True(t, a.PriceUSD.Equal(b.PriceUSD))
	require.Len(t, b.Routes, len(a.Routes))
	for i := range a.Routes {
		ra, rb := a.Routes[i], b.Routes[i]
		require.Equal(t, ra.PriceUSD == nil, rb.PriceUSD == nil)
		require.Equal(t, ra.MaxPriceUSD == nil, rb.MaxPriceUSD == nil)
		if ra.PriceUSD != nil {
			require.True(t, ra.PriceUSD.Equal(*rb.PriceUSD))
		}
		if ra.MaxPriceUSD != nil {
			require.True(t, ra.MaxPriceUSD.Equal(*rb.MaxPriceUSD))
		}
		ra.PriceUSD, rb.PriceUSD, ra.MaxPriceUSD, rb.MaxPriceUSD = nil, nil, nil, nil
		require.Equal(t, ra, rb)
	}
	require.Equal(t, a.Schemes, b.Schemes)
	require.Equal(t, a.Cookies, b.Cookies)
}

func requireSameJSON(t *testing.T, a, b *tenant.Tenant) {
	t.Helper()
	ja, err := json.Marshal(a)
	require.NoError(t, err)
	jb, err := json.Marshal(b)
	require.NoError(t, err)
	require.Equal(t, string(ja), string(jb))
}

// TestDirectoryOwnsItsRoutes: neither the caller's tenants nor copies from
// Tenants share memory with the directory.
func TestDirectoryOwnsItsRoutes(t *testing.T) {
	t.Parallel()
	price := dec("0.5")
	in := []tenant.Tenant{{Slug: "s", WorkerName: "w", X402Enabled: true, Schemes: []string{"exact"},
		Routes: []tenant.Route{{Method: "post", Path: "/a", PriceUSD: &price, Schemes: []string{"upto"}, Discovery: json.RawMessage(` { "a" : 1 } `)}}}}
	d, err := tenant.NewDirectory(in)
	require.NoError(t, err)
	in[0].Routes[0].Path = "/changed"
	in[0].Routes[0].Schemes[0] = "changed"
	in[0].Schemes[0] = "changed"
	*in[0].Routes[0].PriceUSD = dec("9")
	s, _ := d.Lookup("s")
	require.Equal(t, "POST", s.Routes[0].Method)
	require.Equal(t, `{"a":1}`, string(s.Routes[0].Discovery))
	p := s.PriceFor("POST", "/a")
	require.Equal(t, "/a", p.Pattern)
	require.True(t, p.PriceUSD.Equal(dec("0.5")))
	require.Equal(t, []string{"upto"}, p.Schemes)
	require.Equal(t, []string{"exact"}, s.Schemes)

	cp := d.Tenants()[0]
	cp.Routes[0].Discovery[2] = 'b'
	cp.Routes[0].Schemes[0] = "other"
	require.Equal(t, `{"a":1}`, string(s.Routes[0].Discovery))
	require.Equal(t, []string{"upto"}, s.Routes[0].Schemes)
	require.Equal(t, "/a", cp.PriceFor("POST", "/a").Pattern, "a copy prices by its own compiled routes")

	// A tenant value never built into a directory compiles on the fly; one
	// whose routes were replaced after compiling prices by the new ones.
	hand := tenant.Tenant{Slug: "h", WorkerName: "w", X402Enabled: true, PriceUSD: dec("1"), Routes: []tenant.Route{{Path: "/free", PriceUSD: &decimal.Zero}}}
	require.False(t, hand.PriceFor("GET", "/free").Charges)
	cp.Routes = []tenant.Route{{Path: "/b"}}
	require.Equal(t, "/b", cp.PriceFor("GET", "/b").Pattern)
	bad := tenant.Tenant{Slug: "h", WorkerName: "w", PriceUSD: dec("1"), Routes: []tenant.Route{{Path: "bad"}}}
	require.Equal(t, "", bad.PriceFor("GET", "/bad").Pattern, "invalid routes: the tenant's price")
	require.True(t, bad.PriceFor("GET", "/bad").PriceUSD.Equal(dec("1")))
}

func TestPriceForDoesNotAllocate(t *testing.T) {
	d := fiftyRoutes(t)
	s, _ := d.Lookup("big")
	paths := []string{"/v1/items/42", "/v1/r%C3%A9sum%C3%A9/x", "/nothing/here", "/v1/items/42/reviews/7", "/", "/files/a/b/c"}
	for _, p := range paths {
		allocs := testing.AllocsPerRun(200, func() { _ = s.PriceFor("GET", p) })
		require.Zero(t, allocs, p)
	}
}

// fiftyRoutes is a tenant with 50 routes of mixed shapes and methods.
func fiftyRoutes(t testing.TB) *tenant.Directory {
	t.Helper()
	var routes []string
	for i := 0; i < 10; i++ {
		routes = append(routes,
			fmt.Sprintf(`{"method":"GET","path":"/v%d/items","priceUsd":"0.001"}`, i),
			fmt.Sprintf(`{"method":"GET","path":"/v%d/items/:id","priceUsd":"0.002"}`, i),
			fmt.Sprintf(`{"method":"POST","path":"/v%d/items/:id/reviews","priceUsd":"0.003"}`, i),
			fmt.Sprintf(`{"path":"/v%d/items/:id/reviews/:rid","priceUsd":"0.004"}`, i),
			fmt.Sprintf(`{"path":"/v%d/r%%C3%%A9sum%%C3%%A9/*","priceUsd":"0.005"}`, i))
	}
	// The fifth shape is written decoded: replace the escaped literal.
	for i := range routes {
		routes[i] = strings.ReplaceAll(routes[i], "r%C3%A9sum%C3%A9", "résumé")
	}
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"big","workerName":"w","priceUsd":"0.01","x402Enabled":true,"routes":[` + strings.Join(routes, ",") + `]}]}`))
	require.NoError(t, err)
	s, _ := d.Lookup("big")
	require.Len(t, s.Routes, 50)
	require.Equal(t, "/v1/résumé/*", s.PriceFor("GET", "/v1/r%C3%A9sum%C3%A9/x").Pattern)
	require.Equal(t, "/v1/items/:id/reviews/:rid", s.PriceFor("GET", "/v1/items/42/reviews/7").Pattern)
	return d
}

// BenchmarkPriceFor50 prices a request on a tenant with 50 routes: a
// three-segment path matched through literal and parameter nodes.
func BenchmarkPriceFor50(b *testing.B) {
	d := fiftyRoutes(b)
	s, _ := d.Lookup("big")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p := s.PriceFor("GET", "/v7/items/42"); p.Route == nil {
			b.Fatal("no route")
		}
	}
}

func FuzzPriceFor(f *testing.F) {
	d := mustParse(f, weatherDirectory)
	big := fiftyRoutes(f)
	for _, s := range [][2]string{{"GET", "/forecast/x"}, {"POST", "/llm/"}, {"GET", "//"}, {"get", "/he%61lth"}, {"GET", "/v1/r%C3%A9sum%C3%A9/x"}, {"", "%"}, {"GET", "/a/%zz/%"}} {
		f.Add(s[0], s[1])
	}
	spec := mustParse(f, `{"tenants":[{"slug":"s","workerName":"w","priceUsd":"1","x402Enabled":true,"routes":[`+strings.Join(specificityRoutes, ",")+`]}]}`)
	tenants := []*tenant.Tenant{}
	for _, dir := range []*tenant.Directory{d, big, spec} {
		for _, tn := range dir.Tenants() {
			tn := tn
			tenants = append(tenants, &tn)
		}
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		for _, tn := range tenants {
			p := tn.PriceFor(method, path)
			if len(p.Schemes) == 0 {
				t.Fatalf("no schemes for %q %q", method, path)
			}
			if p.MaxPriceUSD.LessThan(p.PriceUSD) {
				t.Fatalf("max below price for %q %q", method, path)
			}
			if (p.Route == nil) != (p.Pattern == "") {
				t.Fatalf("route and pattern disagree for %q %q", method, path)
			}
			if p.Charges != (tn.X402Enabled && (p.PriceUSD.IsPositive() || p.MaxPriceUSD.IsPositive())) {
				t.Fatalf("charges wrong for %q %q", method, path)
			}
			if p.Charges && !tn.Charges() {
				t.Fatalf("a request charges on a tenant that charges for nothing")
			}
			if want := referenceMatch(tn, method, path); want != p.Route {
				t.Fatalf("%q %q: PriceFor chose %+v, the reference %+v", method, path, p.Route, want)
			}
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Literals match without case, so two routes whose literals differ only in
// case are one route twice: the directory is refused.
func TestRoutesDifferingInCaseAreAmbiguous(t *testing.T) {
	_, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"a","workerName":"w","x402Enabled":true,"priceUsd":"0.01",
	  "routes":[{"path":"/premium","priceUsd":"0.5"},{"path":"/PREMIUM","priceUsd":"0"}]}]}`))
	require.ErrorContains(t, err, "ambiguous")
}
