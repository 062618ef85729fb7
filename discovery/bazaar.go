package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"slices"
	"strings"

	"github.com/402claw/dispatcher/tenant"
)

// ExtensionKey is the key of the Bazaar extension in a PaymentRequired's
// extensions and in a discovery item's extensions.
const ExtensionKey = "bazaar"

// JSONSchemaDialect is the "$schema" of every schema this package writes.
const JSONSchemaDialect = "https://json-schema.org/draft/2020-12/schema"

// ErrUnsupportedMethod is returned for an HTTP method the Bazaar cannot
// describe (only GET, HEAD, DELETE, POST, PUT and PATCH).
var ErrUnsupportedMethod = errors.New("discovery: the Bazaar describes only GET, HEAD, DELETE, POST, PUT and PATCH")

// BazaarOptions refine a declaration for one request.
type BazaarOptions struct {
	// Prefix is put before the route's path in routeTemplate: "/t/<slug>"
	// when the request reached the tenant by path, empty when by host, so
	// the template matches the URL a client actually calls.
	Prefix string
	// PathParams are this request's path parameter values (see
	// PathParams); nil shows the declared examples.
	PathParams map[string]string
}

// BazaarExtension builds the value of extensions.bazaar for a route that
// declares discovery, called with method (empty means the route's own
// method, or for an any-method route GET, POST when a body is declared):
//
//	{"info": {"input": {"type": "http", "method", "queryParams" | "bodyType" + "body",
//	                    "headers", "pathParams"}, "output": {"type", "example"}},
//	 "schema": <JSON Schema (draft 2020-12) that info validates against>,
//	 "routeTemplate": "/forecast/:city"}
//
// as the Bazaar extension specification lays it out; routeTemplate is
// present only for a path with parameters, and is the route's own
// (tenant-relative) path: use BazaarExtensionWith to prefix it and to show
// a request's concrete path parameters. A nil route, or one without
// discovery, gives nil and no error. An invalid declaration is an error
// wrapping ErrInvalidDeclaration that names the field; a method the Bazaar
// cannot describe wraps ErrUnsupportedMethod.
func BazaarExtension(method string, r *tenant.Route) (json.RawMessage, error) {
	return BazaarExtensionWith(method, r, BazaarOptions{})
}

// BazaarExtensionWith is BazaarExtension with per-request options.
func BazaarExtensionWith(method string, r *tenant.Route, opt BazaarOptions) (json.RawMessage, error) {
	if r == nil || len(r.Discovery) == 0 {
		return nil, nil
	}
	return bazaar(method, r, opt)
}

// ValidateRoute checks a route's discovery JSON without building anything:
// the check an admin API runs before it accepts a directory change. Errors
// wrap ErrInvalidDeclaration and name the field.
func ValidateRoute(r *tenant.Route) error {
	if r == nil || len(r.Discovery) == 0 {
		return nil
	}
	_, err := ParseDeclaration(r.Discovery, r.Path)
	return err
}

// ValidateDirectory checks the discovery JSON of every route of every
// tenant, for a directory change an admin API is about to accept. The
// error names the tenant, the route and the field:
// `tenant "weather": routes[0].discovery.queryParams.units.enum: is empty`.
func ValidateDirectory(d *tenant.Directory) error {
	for _, t := range d.Tenants() {
		for i := range t.Routes {
			if err := ValidateRoute(&t.Routes[i]); err != nil {
				return fmt.Errorf("tenant %q: routes[%d].%w", t.Slug, i, err)
			}
		}
	}
	return nil
}

func bazaar(method string, e *tenant.Route, opt BazaarOptions) (json.RawMessage, error) {
	d, err := ParseDeclaration(e.Discovery, e.Path)
	if err != nil {
		return nil, err
	}
	method = resolveMethod(method, e.Method, d)
	body := false
	switch method {
	case "GET", "HEAD", "DELETE":
	case "POST", "PUT", "PATCH":
		body = true
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedMethod, method)
	}
	p := parsePattern(e.Path)

	input := object{}.set("type", "http").set("method", method)
	inputProps := object{}.
		set("type", object{}.set("type", "string").set("const", "http")).
		set("method", object{}.set("type", "string").set("enum", methodsOf(body)))
	inputRequired := []string{"type", "method"}

	if len(d.QueryParams) > 0 {
		if ex := examples(d.QueryParams); len(ex) > 0 {
			input = input.set("queryParams", ex)
		}
		inputProps = inputProps.set("queryParams", paramsSchema(d.QueryParams, false))
	}
	if body {
		bt, b := d.BodyType, d.Body
		if bt == "" {
			bt = "json"
		}
		if len(b) == 0 {
			b = json.RawMessage(`{}`)
			if bt == "text" {
				b = json.RawMessage(`""`)
			}
		}
		input = input.set("bodyType", bt).set("body", b)
		bodySchema := any(object{}.set("type", "object"))
		switch {
		case len(d.BodySchema) > 0:
			bodySchema = d.BodySchema
		case bt == "text":
			bodySchema = object{}.set("type", "string")
		}
		inputProps = inputProps.
			set("bodyType", object{}.set("type", "string").set("enum", []string{"json", "form-data", "text"})).
			set("body", bodySchema)
		inputRequired = append(inputRequired, "bodyType", "body")
	}
	if len(d.Headers) > 0 {
		if ex := examples(d.Headers); len(ex) > 0 {
			input = input.set("headers", ex)
		}
		inputProps = inputProps.set("headers", paramsSchema(d.Headers, true))
	}
	if names := p.params(); len(names) > 0 {
		declared := map[string]Param{}
		for _, n := range names {
			pp := d.PathParams[n] // zero Param: a plain string
			pp.Required = true    // a concrete path has every segment
			declared[n] = pp
		}
		values := map[string]any{}
		if opt.PathParams != nil {
			for _, n := range names {
				if v, ok := opt.PathParams[n]; ok {
					values[n] = v
				}
			}
		} else {
			for _, m := range examples(declared) {
				values[m.key] = m.value
			}
		}
		// pathParams is shown only when every parameter has a value: the
		// schema requires them all.
		if len(values) == len(names) {
			input = input.set("pathParams", sortedObject(values))
		}
		ps := paramsSchema(declared, true)
		inputProps = inputProps.set("pathParams", ps)
	}
	inputSchema := object{}.set("type", "object").set("properties", inputProps).
		set("required", inputRequired).set("additionalProperties", false)

	info := object{}.set("input", input)
	props := object{}.set("input", inputSchema)
	if out := outputOf(d, e.MimeType); out != nil {
		info = info.set("output", out)
		outProps := object{}.set("type", object{}.set("type", "string"))
		if d.Output != nil && d.Output.Format != "" {
			outProps = outProps.set("format", object{}.set("type", "string"))
		}
		outProps = outProps.set("example", object{})
		props = props.set("output", object{}.set("type", "object").set("properties", outProps).set("required", []string{"type"}))
	}
	schema := object{}.set("$schema", JSONSchemaDialect).set("type", "object").
		set("properties", props).set("required", []string{"input"})

	ext := object{}.set("info", info).set("schema", schema)
	if p.dynamic() {
		ext = ext.set("routeTemplate", strings.TrimSuffix(parsePattern(opt.Prefix).template(), "/")+p.template())
	}
	var buf bytes.Buffer
	if err := ext.appendJSON(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// resolveMethod picks the method a declaration describes.
func resolveMethod(method, routeMethod string, d *Declaration) string {
	method = strings.ToUpper(strings.TrimSpace(method))
	if method == "" {
		method = strings.ToUpper(strings.TrimSpace(routeMethod))
	}
	if method == "" {
		method = "GET"
		if d.BodyType != "" || len(d.Body) > 0 {
			method = "POST"
		}
	}
	return method
}

func methodsOf(body bool) []string {
	if body {
		return []string{"POST", "PUT", "PATCH"}
	}
	return []string{"GET", "HEAD", "DELETE"}
}

// examples returns the sample values of the parameters that have one, with
// sorted keys.
func examples(ps map[string]Param) object {
	var o object
	for _, name := range slices.Sorted(maps.Keys(ps)) {
		if v := ps[name].sample(); v != nil {
			o = o.set(name, v)
		}
	}
	return o
}

func sortedObject(m map[string]any) object {
	var o object
	for _, k := range slices.Sorted(maps.Keys(m)) {
		o = o.set(k, m[k])
	}
	return o
}

// paramsSchema is the JSON Schema of a parameter object. Headers and path
// parameters also allow further string-valued members.
func paramsSchema(ps map[string]Param, stringsOnly bool) object {
	props := object{}
	var required []string
	for _, name := range slices.Sorted(maps.Keys(ps)) {
		p := ps[name]
		typ := p.Type
		if typ == "" {
			typ = "string"
		}
		s := object{}.set("type", typ)
		if len(p.Enum) > 0 {
			s = s.set("enum", p.Enum)
		}
		if p.Description != "" {
			s = s.set("description", p.Description)
		}
		if len(p.Default) > 0 {
			s = s.set("default", p.Default)
		}
		props = props.set(name, s)
		if p.Required {
			required = append(required, name)
		}
	}
	o := object{}.set("type", "object").set("properties", props)
	if len(required) > 0 {
		o = o.set("required", required)
	}
	if stringsOnly {
		o = o.set("additionalProperties", object{}.set("type", "string"))
	}
	return o
}

// outputOf is info.output: the declared output, its type defaulting from
// the route's MIME type; nil when neither says anything.
func outputOf(d *Declaration, mimeType string) object {
	var o Output
	if d.Output != nil {
		o = *d.Output
	}
	if o.Type == "" {
		o.Type = outputType(mimeType)
	}
	if o.Type == "" {
		if len(o.Example) == 0 && o.Format == "" {
			return nil
		}
		o.Type = "json"
	}
	out := object{}.set("type", o.Type)
	if o.Format != "" {
		out = out.set("format", o.Format)
	}
	if len(o.Example) > 0 {
		out = out.set("example", o.Example)
	}
	return out
}

// outputType maps a MIME type to the Bazaar's output type: "json" for
// application/json and +json types, "text" for text/*, "" otherwise.
func outputType(mimeType string) string {
	mt, _, err := mime.ParseMediaType(mimeType)
	if err != nil {
		return ""
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return "json"
	case strings.HasPrefix(mt, "text/"):
		return "text"
	}
	return ""
}
