package discovery

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/tenant"
)

func route(method, path, mimeType, discovery string) *tenant.Route {
	r := &tenant.Route{Method: method, Path: path, MimeType: mimeType}
	if discovery != "" {
		r.Discovery = json.RawMessage(discovery)
	}
	return r
}

func TestBazaarExtensionQueryMethod(t *testing.T) {
	t.Parallel()
	r := route("GET", "/forecast/:city", "application/json",
		`{"queryParams": {"units": {"type": "string", "enum": ["metric", "imperial"], "required": true},
		                  "days": {"type": "integer", "example": 7, "description": "1 to 14"}},
		  "headers": {"X-Units": "metric"},
		  "pathParams": {"city": {"example": "Tokyo", "description": "city name"}},
		  "output": {"example": {"city": "Tokyo", "days": []}}}`)
	got, err := BazaarExtension("", r)
	require.NoError(t, err)
	require.JSONEq(t, `{
	  "info": {
	    "input": {"type": "http", "method": "GET",
	              "queryParams": {"days": 7, "units": "metric"},
	              "headers": {"X-Units": "metric"},
	              "pathParams": {"city": "Tokyo"}},
	    "output": {"type": "json", "example": {"city": "Tokyo", "days": []}}
	  },
	  "schema": {
	    "$schema": "https://json-schema.org/draft/2020-12/schema",
	    "type": "object",
	    "properties": {
	      "input": {
	        "type": "object",
	        "properties": {
	          "type": {"type": "string", "const": "http"},
	          "method": {"type": "string", "enum": ["GET", "HEAD", "DELETE"]},
	          "queryParams": {"type": "object", "properties": {
	              "days": {"type": "integer", "description": "1 to 14"},
	              "units": {"type": "string", "enum": ["metric", "imperial"]}},
	            "required": ["units"]},
	          "headers": {"type": "object", "properties": {"X-Units": {"type": "string"}},
	            "additionalProperties": {"type": "string"}},
	          "pathParams": {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
	            "required": ["city"], "additionalProperties": {"type": "string"}}
	        },
	        "required": ["type", "method"],
	        "additionalProperties": false
	      },
	      "output": {"type": "object", "properties": {"type": {"type": "string"}, "example": {}}, "required": ["type"]}
	    },
	    "required": ["input"]
	  },
	  "routeTemplate": "/forecast/:city"
	}`, string(got))
	require.True(t, strings.HasPrefix(string(got), `{"info":{"input":{"type":"http","method":"GET"`), "fields in the specification's order: %s", got)
}

func TestBazaarExtensionBodyMethod(t *testing.T) {
	t.Parallel()
	r := route("", "/search", "text/csv", `{"body": {"query": "example"}, "output": {"format": "csv"}}`)
	got, err := BazaarExtension("post", r)
	require.NoError(t, err)
	require.JSONEq(t, `{
	  "info": {
	    "input": {"type": "http", "method": "POST", "bodyType": "json", "body": {"query": "example"}},
	    "output": {"type": "text", "format": "csv"}
	  },
	  "schema": {
	    "$schema": "https://json-schema.org/draft/2020-12/schema",
	    "type": "object",
	    "properties": {
	      "input": {
	        "type": "object",
	        "properties": {
	          "type": {"type": "string", "const": "http"},
	          "method": {"type": "string", "enum": ["POST", "PUT", "PATCH"]},
	          "bodyType": {"type": "string", "enum": ["json", "form-data", "text"]},
	          "body": {"type": "object"}
	        },
	        "required": ["type", "method", "bodyType", "body"],
	        "additionalProperties": false
	      },
	      "output": {"type": "object", "properties": {"type": {"type": "string"}, "format": {"type": "string"}, "example": {}}, "required": ["type"]}
	    },
	    "required": ["input"]
	  }
	}`, string(got))
}

func TestBazaarExtensionMethodChoice(t *testing.T) {
	t.Parallel()
	method := func(m string, r *tenant.Route) string {
		t.Helper()
		b, err := BazaarExtension(m, r)
		require.NoError(t, err)
		var x struct {
			Info struct {
				Input map[string]any `json:"input"`
			} `json:"info"`
		}
		require.NoError(t, json.Unmarshal(b, &x))
		return x.Info.Input["method"].(string)
	}
	require.Equal(t, "GET", method("", route("", "/a", "", `{}`)), "any-method route without body: GET")
	require.Equal(t, "POST", method("", route("", "/a", "", `{"bodyType": "text"}`)), "any-method route with body: POST")
	require.Equal(t, "PUT", method("", route("PUT", "/a", "", `{}`)))
	require.Equal(t, "DELETE", method("delete", route("", "/a", "", `{}`)), "the request's method wins")

	// A body method without a declared body gets an empty one of its type.
	b, err := BazaarExtension("PATCH", route("", "/a", "", `{"bodyType": "text"}`))
	require.NoError(t, err)
	require.Contains(t, string(b), `"bodyType":"text","body":""`)
	require.Contains(t, string(b), `"body":{"type":"string"}`)
	b, err = BazaarExtension("POST", route("", "/a", "", `{}`))
	require.NoError(t, err)
	require.Contains(t, string(b), `"bodyType":"json","body":{}`)

	_, err = BazaarExtension("OPTIONS", route("", "/a", "", `{}`))
	require.ErrorIs(t, err, ErrUnsupportedMethod)
}

func TestBazaarExtensionWithoutDiscovery(t *testing.T) {
	t.Parallel()
	b, err := BazaarExtension("GET", route("GET", "/a", "", ""))
	require.NoError(t, err)
	require.Nil(t, b)
	b, err = BazaarExtension("GET", nil)
	require.NoError(t, err)
	require.Nil(t, b)
}

func TestBazaarExtensionRouteTemplate(t *testing.T) {
	t.Parallel()
	tmpl := func(path string, opt BazaarOptions) (string, map[string]any) {
		t.Helper()
		b, err := BazaarExtensionWith("GET", route("", path, "", `{}`), opt)
		require.NoError(t, err)
		var x struct {
			Info struct {
				Input map[string]any `json:"input"`
			} `json:"info"`
			RouteTemplate *string `json:"routeTemplate"`
		}
		require.NoError(t, json.Unmarshal(b, &x))
		pp, _ := x.Info.Input["pathParams"].(map[string]any)
		if x.RouteTemplate == nil {
			return "<absent>", pp
		}
		require.True(t, ValidRouteTemplate(*x.RouteTemplate), *x.RouteTemplate)
		return *x.RouteTemplate, pp
	}
	got, _ := tmpl("/static/path", BazaarOptions{})
	require.Equal(t, "<absent>", got, "absent for static routes")
	got, _ = tmpl("/", BazaarOptions{Prefix: "/t/x"})
	require.Equal(t, "<absent>", got)
	got, pp := tmpl("/weather/:country/:city", BazaarOptions{Prefix: "/t/wx", PathParams: map[string]string{"country": "jp", "city": "Tokyo", "other": "x"}})
	require.Equal(t, "/t/wx/weather/:country/:city", got)
	require.Equal(t, map[string]any{"country": "jp", "city": "Tokyo"}, pp, "this request's values, only the route's names")
	got, pp = tmpl("/llm/*", BazaarOptions{PathParams: PathParams("/llm/*", "/llm/v1/chat")})
	require.Equal(t, "/llm/:rest", got)
	require.Equal(t, map[string]any{"rest": "v1/chat"}, pp)
	got, _ = tmpl("/a/:rest/*", BazaarOptions{})
	require.Equal(t, "/a/:rest/:rest_", got, "the wildcard's name never collides")
	got, _ = tmpl("/caf\u00e9/:id/a@b", BazaarOptions{})
	require.Equal(t, "/caf%C3%A9/:id/a%40b", got, "characters outside the template grammar are escaped")
}

func TestPathParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, path string
		want          map[string]string
	}{
		{"/forecast/:city", "/forecast/Tokyo", map[string]string{"city": "Tokyo"}},
		{"/forecast/:city", "/forecast/", nil},
		{"/forecast/:city", "/forecast/Tokyo/extra", nil},
		{"/forecast/:city", "/other/Tokyo", nil},
		{"/a/:x/b/:y", "/a/1/b/2", map[string]string{"x": "1", "y": "2"}},
		{"/llm/*", "/llm", map[string]string{"rest": ""}},
		{"/llm/*", "/llm/a/b", map[string]string{"rest": "a/b"}},
		{"/static", "/static", nil},
	} {
		require.Equal(t, tc.want, PathParams(tc.pattern, tc.path), "%s %s", tc.pattern, tc.path)
	}
}

func TestValidRouteTemplate(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"/users/:userId": true, "/weather/:country/:city": true, "/a-b_c.d~e/%20": true,
		"": false, "users": false, "/users/../admin": false, "/a/%2e%2e/b": false, "/x/http%3A%2F%2Fevil": false,
		"/a b": false, "/a?b": false, "/a*": false,
	} {
		require.Equal(t, want, ValidRouteTemplate(s), s)
	}
}

func TestDeclarationErrorsNameTheField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		decl, field string
	}{
		{`{"queyParams": {}}`, "queyParams"},
		{`{"queryParams": {"units": {"type": "string", "enm": ["a"]}}}`, ""},
		{`{"queryParams": {"units": {"type": "date"}}}`, "queryParams.units.type"},
		{`{"queryParams": {"units": {"enum": []}}}`, "queryParams.units.enum"},
		{`{"queryParams": {"units": {"enum": ["a", 3]}}}`, "queryParams.units.enum[1]"},
		{`{"queryParams": {"units": {"enum": ["a"], "example": "b"}}}`, "queryParams.units.example"},
		{`{"queryParams": {"n": {"type": "integer", "example": 1.5}}}`, "queryParams.n.example"},
		{`{"queryParams": {"n": {"type": "boolean", "default": "yes"}}}`, "queryParams.n.default"},
		{`{"queryParams": {"n": {"required": true}}}`, "queryParams.n"},
		{`{"queryParams": {"a b": "x"}}`, "queryParams.a b"},
		{`{"queryParams": {"n": 5}}`, "queryParams.n"},
		{`{"headers": {"X-N": {"type": "integer"}}}`, "headers.X-N.type"},
		{`{"headers": {"X N": "v"}}`, "headers.X N"},
		{`{"pathParams": {"town": "Tokyo"}}`, "pathParams.town"},
		{`{"bodyType": "xml"}`, "bodyType"},
		{`{"bodyType": "text", "body": {"a": 1}}`, "body"},
		{`{"body": "text"}`, "body"},
		{`{"bodySchema": true}`, "bodySchema"},
		{`{"output": {"type": "j son"}}`, "output.type"},
		{`{"output": "json"}`, "output"},
		{`[]`, ""},
		{`{} {}`, ""},
	} {
		_, err := ParseDeclaration([]byte(tc.decl), "/forecast/:city")
		require.Error(t, err, tc.decl)
		require.ErrorIs(t, err, ErrInvalidDeclaration, tc.decl)
		var de *DeclarationError
		require.True(t, errors.As(err, &de), tc.decl)
		if tc.field != "" {
			require.Equal(t, tc.field, de.Field, "%s: %v", tc.decl, err)
			require.Contains(t, err.Error(), "discovery."+tc.field+":")
		}
		// The same declaration on a route is the same error.
		_, err2 := BazaarExtension("GET", route("GET", "/forecast/:city", "", tc.decl))
		require.ErrorIs(t, err2, ErrInvalidDeclaration)
		require.Error(t, ValidateRoute(route("GET", "/forecast/:city", "", tc.decl)))
	}
	_, err := ParseDeclaration([]byte(`{"queryParams": {"u": "`+strings.Repeat("x", MaxDeclarationBytes)+`"}}`), "")
	require.ErrorIs(t, err, ErrInvalidDeclaration)
	require.NoError(t, ValidateRoute(route("GET", "/a", "", "")))
}

// TestDirectoryExampleDeclares checks the route of DESIGN section 13's
// directory example.
func TestDirectoryExampleDeclares(t *testing.T) {
	t.Parallel()
	d := mustDirectory(t, testDirectory)
	wx, ok := d.Lookup("weather")
	require.True(t, ok)
	for i := range wx.Routes {
		require.NoError(t, ValidateRoute(&wx.Routes[i]))
	}
	b, err := BazaarExtension("GET", &wx.Routes[0])
	require.NoError(t, err)
	require.Contains(t, string(b), `"queryParams":{"units":"metric"}`)
	require.Contains(t, string(b), `"routeTemplate":"/forecast/:city"`)
}

func TestPathParamsDecodes(t *testing.T) {
	t.Parallel()
	require.Equal(t, map[string]string{"city": "São Paulo"}, PathParams("/forecast/:city", "/forecast/S%C3%A3o%20Paulo?units=metric"))
	require.Equal(t, map[string]string{"id": "7"}, PathParams("/caf\u00e9/:id", "/caf%C3%A9/7"))
}

func TestValidateDirectory(t *testing.T) {
	t.Parallel()
	require.NoError(t, ValidateDirectory(mustDirectory(t, testDirectory)))
	bad := mustDirectory(t, `{"tenants": [{"slug": "wx", "workerName": "w", "routes": [
	  {"path": "/a"}, {"path": "/b", "discovery": {"queryParams": {"units": {"enum": []}}}}]}]}`)
	err := ValidateDirectory(bad)
	require.ErrorIs(t, err, ErrInvalidDeclaration)
	require.EqualError(t, err, `tenant "wx": routes[1].discovery.queryParams.units.enum: is empty`)
}
