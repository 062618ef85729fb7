package discovery

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/402claw/dispatcher/tenant"
)

// FuzzParseDeclaration feeds arbitrary discovery JSON (tenant input) to the
// parser and the extension builder: no panics, and whatever is accepted
// builds a valid JSON extension whose routeTemplate passes the Bazaar rules.
func FuzzParseDeclaration(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"queryParams": {"units": {"type": "string", "enum": ["metric", "imperial"]}}}`,
		`{"body": {"q": 1}, "bodyType": "json", "headers": {"X-A": "b"}}`,
		`{"pathParams": {"city": {"example": "Tokyo"}}, "output": {"type": "json", "example": [1]}}`,
		`{"queryParams": {"n": {"type": "integer", "example": 3, "required": true}}}`,
		`{"bodyType": "text", "body": "hi"}`, `[]`, `{"output": null}`,
	} {
		f.Add([]byte(s), "/forecast/:city", "GET")
	}
	f.Fuzz(func(t *testing.T, raw []byte, path, method string) {
		d, err := ParseDeclaration(raw, path)
		if err != nil {
			if d != nil {
				t.Fatal("declaration with an error")
			}
			return
		}
		b, err := BazaarExtension(method, &tenant.Route{Path: path, Discovery: raw})
		if err != nil {
			return // an unsupported method
		}
		if b == nil {
			return
		}
		var x struct {
			RouteTemplate *string `json:"routeTemplate"`
		}
		if err := json.Unmarshal(b, &x); err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		if x.RouteTemplate != nil && !ValidRouteTemplate(*x.RouteTemplate) {
			t.Fatalf("invalid routeTemplate %q for %q", *x.RouteTemplate, path)
		}
	})
}

// FuzzRouteTemplate checks that any route path renders to a valid template
// and that PathParams never panics.
func FuzzRouteTemplate(f *testing.F) {
	for _, s := range []string{"/a/:b/*", "/x/../y", "/%2e%2e/:id", "/http:/x", "/a..b/:c", "/:a/:a/*"} {
		f.Add(s, "/a/b/c")
	}
	f.Fuzz(func(t *testing.T, path, req string) {
		tmpl := parsePattern(path).template()
		if !ValidRouteTemplate(tmpl) && tmpl != "/" {
			t.Fatalf("template %q of %q is not valid", tmpl, path)
		}
		_ = PathParams(path, req)
	})
}

// FuzzParseQuery feeds arbitrary query strings to the list parser.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"limit=50&network=eip155:8453", "type=mcp", "network=!!!", "offset=3&extensions=bazaar,x", "payTo=0x1&payTo=0x2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v)
		if err != nil {
			return
		}
		if q.Limit < 1 || q.Limit > MaxLimit || q.Offset < 0 || q.Offset > MaxOffset {
			t.Fatalf("out of bounds: %+v", q)
		}
		if q.Network != "" && !isCAIP2(q.Network) {
			t.Fatalf("network %q", q.Network)
		}
	})
}
