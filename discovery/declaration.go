package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// MaxDeclarationBytes bounds the size of a route's discovery JSON.
const MaxDeclarationBytes = 64 << 10

// maxParams bounds the parameters of one kind, and maxEnum the values of
// one enum, so a declaration cannot make the 402 challenge unbounded.
const (
	maxParams = 64
	maxEnum   = 100
)

// ErrInvalidDeclaration is wrapped by every error about a route's discovery
// JSON; the *DeclarationError in the chain names the field.
var ErrInvalidDeclaration = errors.New("discovery: invalid declaration")

// DeclarationError names the field of a discovery declaration that is
// wrong, as a dotted path ("queryParams.units.enum").
type DeclarationError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *DeclarationError) Error() string {
	if e.Field == "" {
		return "discovery: " + e.Reason
	}
	return "discovery." + e.Field + ": " + e.Reason
}

// Unwrap lets errors.Is find ErrInvalidDeclaration.
func (e *DeclarationError) Unwrap() error { return ErrInvalidDeclaration }

func declErr(field, format string, args ...any) error {
	return &DeclarationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Declaration is the "discovery" object a tenant gives on a route. It says
// how to call the route and what it answers, and becomes the route's Bazaar
// extension (extensions.bazaar of its 402 challenge) and its discovery
// listing:
//
//	"discovery": {
//	  "queryParams": {"units": {"type": "string", "enum": ["metric", "imperial"], "required": true},
//	                  "days": {"type": "integer", "example": 7, "description": "1 to 14"}},
//	  "headers":     {"X-Units": "metric"},
//	  "pathParams":  {"city": {"example": "Tokyo"}},
//	  "bodyType":    "json",
//	  "body":        {"query": "example"},
//	  "bodySchema":  {"type": "object", "properties": {"query": {"type": "string"}}},
//	  "output":      {"type": "json", "example": {"city": "Tokyo", "days": []}}
//	}
//
// Every field is optional. A parameter is either a bare string (its example
// value) or a Param object. queryParams, headers and pathParams become the
// example values of info.input and the properties of the schema; pathParams
// may only name the route path's ":name" segments (undeclared ones are plain
// strings). bodyType ("json", "form-data" or "text") and body (an object,
// or a string for "text") apply to POST, PUT and PATCH; body without
// bodyType means "json", and a body method without a body gets an empty one.
// bodySchema, when given, is the JSON Schema of the body in the extension's
// schema. output.type defaults from the route's mimeType ("json" for JSON
// types, "text" for text/*). Unknown fields are errors, so a misspelt key
// does not silently drop discovery data.
type Declaration struct {
	QueryParams map[string]Param `json:"queryParams,omitempty"`
	Headers     map[string]Param `json:"headers,omitempty"`
	PathParams  map[string]Param `json:"pathParams,omitempty"`
	BodyType    string           `json:"bodyType,omitempty"`
	Body        json.RawMessage  `json:"body,omitempty"`
	BodySchema  json.RawMessage  `json:"bodySchema,omitempty"`
	Output      *Output          `json:"output,omitempty"`
}

// Param describes one query parameter, header or path parameter.
type Param struct {
	// Type is "string" (the default), "number", "integer" or "boolean";
	// headers and path parameters are always strings.
	Type string `json:"type,omitempty"`
	// Description is shown to people and agents.
	Description string `json:"description,omitempty"`
	// Enum lists the allowed values.
	Enum []json.RawMessage `json:"enum,omitempty"`
	// Example is the value info.input shows; Default, then the first Enum
	// value stand in when it is absent.
	Example json.RawMessage `json:"example,omitempty"`
	Default json.RawMessage `json:"default,omitempty"`
	// Required lists the parameter in the schema's "required"; a required
	// parameter needs an example (or a default or an enum).
	Required bool `json:"required,omitempty"`
}

// UnmarshalJSON accepts a bare string as the parameter's example.
func (p *Param) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*p = Param{Example: append(json.RawMessage(nil), b...)}
		return nil
	}
	type plain Param
	var q plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return err
	}
	*p = Param(q)
	return nil
}

// Output describes the route's answer.
type Output struct {
	// Type is the response content type in the Bazaar's words: "json",
	// "text", ...
	Type string `json:"type,omitempty"`
	// Format adds detail ("csv", "markdown", ...).
	Format string `json:"format,omitempty"`
	// Example is an example response value.
	Example json.RawMessage `json:"example,omitempty"`
}

// ParseDeclaration reads and validates a route's discovery JSON. routePath
// is the route's path pattern (its ":name" segments are the only path
// parameters the declaration may describe); empty skips that check. Errors
// wrap ErrInvalidDeclaration and name the field.
func ParseDeclaration(raw []byte, routePath string) (*Declaration, error) {
	if len(raw) > MaxDeclarationBytes {
		return nil, declErr("", "declaration is larger than %d bytes", MaxDeclarationBytes)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return &Declaration{}, nil
	}
	if raw[0] != '{' {
		return nil, declErr("", "must be a JSON object")
	}
	var rd struct {
		QueryParams map[string]json.RawMessage `json:"queryParams"`
		Headers     map[string]json.RawMessage `json:"headers"`
		PathParams  map[string]json.RawMessage `json:"pathParams"`
		BodyType    string                     `json:"bodyType"`
		Body        json.RawMessage            `json:"body"`
		BodySchema  json.RawMessage            `json:"bodySchema"`
		Output      *Output                    `json:"output"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rd); err != nil {
		return nil, jsonDeclErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, declErr("", "trailing data after the object")
	}
	d := Declaration{BodyType: rd.BodyType, Body: rd.Body, BodySchema: rd.BodySchema, Output: rd.Output}
	var err error
	if d.QueryParams, err = parseParams("queryParams", rd.QueryParams); err != nil {
		return nil, err
	}
	if d.Headers, err = parseParams("headers", rd.Headers); err != nil {
		return nil, err
	}
	if d.PathParams, err = parseParams("pathParams", rd.PathParams); err != nil {
		return nil, err
	}
	if err := d.validate(routePath); err != nil {
		return nil, err
	}
	return &d, nil
}

// jsonDeclErr turns a decoding error into a DeclarationError naming the
// field the decoder was at.
func jsonDeclErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return declErr(te.Field, "has the wrong JSON type (%s where %s was expected)", te.Value, te.Type)
	}
	msg := err.Error()
	if i := strings.Index(msg, "unknown field "); i >= 0 {
		name := strings.Trim(msg[i+len("unknown field "):], `"`)
		return declErr(name, "unknown field")
	}
	return declErr("", "not valid JSON: %s", strings.TrimPrefix(msg, "json: "))
}

// parseParams decodes each parameter on its own, so an error names it.
func parseParams(kind string, raw map[string]json.RawMessage) (map[string]Param, error) {
	if raw == nil {
		return nil, nil
	}
	if len(raw) > maxParams {
		return nil, declErr(kind, "has more than %d entries", maxParams)
	}
	out := make(map[string]Param, len(raw))
	for name, msg := range raw {
		msg = bytes.TrimSpace(msg)
		if len(msg) == 0 || msg[0] != '"' && msg[0] != '{' {
			return nil, declErr(kind+"."+name, "must be an example string or a parameter object")
		}
		var p Param
		if err := json.Unmarshal(msg, &p); err != nil {
			e := jsonDeclErr(err).(*DeclarationError)
			if e.Field != "" {
				e.Field = kind + "." + name + "." + e.Field
			} else {
				e.Field = kind + "." + name
			}
			return nil, e
		}
		out[name] = p
	}
	return out, nil
}

func (d *Declaration) validate(routePath string) error {
	if err := validateParams("queryParams", d.QueryParams, false, isQueryName); err != nil {
		return err
	}
	if err := validateParams("headers", d.Headers, true, isHeaderName); err != nil {
		return err
	}
	if err := validateParams("pathParams", d.PathParams, true, isParamName); err != nil {
		return err
	}
	if routePath != "" && len(d.PathParams) > 0 {
		names := parsePattern(routePath).params()
		for name := range d.PathParams {
			if !slices.Contains(names, name) {
				return declErr("pathParams."+name, "the route path %q has no :%s segment", routePath, name)
			}
		}
	}
	switch d.BodyType {
	case "", "json", "form-data", "text":
	default:
		return declErr("bodyType", "%q is not one of json, form-data, text", d.BodyType)
	}
	if len(d.Body) > 0 {
		if d.BodyType == "" {
			d.BodyType = "json"
		}
		switch d.BodyType {
		case "text":
			if d.Body[0] != '"' {
				return declErr("body", "must be a string when bodyType is text")
			}
		default:
			if d.Body[0] != '{' {
				return declErr("body", "must be an object when bodyType is %s", d.BodyType)
			}
		}
	}
	if len(d.BodySchema) > 0 && d.BodySchema[0] != '{' {
		return declErr("bodySchema", "must be a JSON Schema object")
	}
	if d.Output != nil {
		if !isToken(d.Output.Type, 64) && d.Output.Type != "" {
			return declErr("output.type", "%q is not a short type name such as json or text", d.Output.Type)
		}
		if len(d.Output.Format) > 64 {
			return declErr("output.format", "is longer than 64 characters")
		}
	}
	return nil
}

func validateParams(kind string, ps map[string]Param, stringsOnly bool, validName func(string) bool) error {
	if len(ps) > maxParams {
		return declErr(kind, "has more than %d entries", maxParams)
	}
	for name, p := range ps {
		field := kind + "." + name
		if !validName(name) {
			return declErr(field, "%q is not a valid name", name)
		}
		if p.Type == "" {
			p.Type = "string"
		}
		switch p.Type {
		case "string":
		case "number", "integer", "boolean":
			if stringsOnly {
				return declErr(field+".type", "must be string")
			}
		default:
			return declErr(field+".type", "%q is not one of string, number, integer, boolean", p.Type)
		}
		if len(p.Description) > 1024 {
			return declErr(field+".description", "is longer than 1024 characters")
		}
		if len(p.Enum) > maxEnum {
			return declErr(field+".enum", "has more than %d values", maxEnum)
		}
		if p.Enum != nil && len(p.Enum) == 0 {
			return declErr(field+".enum", "is empty")
		}
		for i, v := range p.Enum {
			if !hasType(v, p.Type) {
				return declErr(fmt.Sprintf("%s.enum[%d]", field, i), "is not a %s", p.Type)
			}
		}
		for _, ex := range []struct {
			name string
			v    json.RawMessage
		}{{"example", p.Example}, {"default", p.Default}} {
			if len(ex.v) == 0 {
				continue
			}
			if !hasType(ex.v, p.Type) {
				return declErr(field+"."+ex.name, "is not a %s", p.Type)
			}
			if len(p.Enum) > 0 && !inEnum(ex.v, p.Enum) {
				return declErr(field+"."+ex.name, "is not one of the enum values")
			}
		}
		if p.Required && p.sample() == nil {
			return declErr(field, "is required but has no example, default or enum to show")
		}
		ps[name] = p
	}
	return nil
}

// sample returns the value info.input shows for the parameter: its example,
// else its default, else its first enum value; nil when it has none.
func (p Param) sample() json.RawMessage {
	switch {
	case len(p.Example) > 0:
		return p.Example
	case len(p.Default) > 0:
		return p.Default
	case len(p.Enum) > 0:
		return p.Enum[0]
	}
	return nil
}

// hasType reports whether a JSON value is of a parameter type.
func hasType(v json.RawMessage, typ string) bool {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return false
	}
	switch typ {
	case "string":
		_, ok := x.(string)
		return ok
	case "boolean":
		_, ok := x.(bool)
		return ok
	case "number":
		_, ok := x.(json.Number)
		return ok
	case "integer":
		n, ok := x.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	}
	return false
}

func inEnum(v json.RawMessage, enum []json.RawMessage) bool {
	cv, err := canonical(v)
	if err != nil {
		return false
	}
	for _, e := range enum {
		if ce, err := canonical(e); err == nil && bytes.Equal(ce, cv) {
			return true
		}
	}
	return false
}

func canonical(v json.RawMessage) ([]byte, error) {
	var x any
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	return json.Marshal(x)
}

func isToken(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// isQueryName accepts printable ASCII names without spaces or the query's
// own delimiters.
func isQueryName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '&' || c == '=' || c == '#' || c == '?' {
			return false
		}
	}
	return true
}

// isHeaderName accepts RFC 9110 token characters.
func isHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// isParamName accepts the names a ":name" path segment can have.
func isParamName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
