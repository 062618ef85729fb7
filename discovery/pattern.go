package discovery

import (
	"net/url"
	"strings"
)

// WildcardParam is the name a route's final "*" segment takes in a Bazaar
// routeTemplate: "/llm/*" becomes "/llm/:rest". The Bazaar's template
// grammar (^/[a-zA-Z0-9_/:.\-~%]+$) has no wildcard, and a named parameter
// lets a facilitator key every concrete path under one entry.
const WildcardParam = "rest"

// pattern is a parsed route path: literal segments, ":name" segments and
// an optional final "*".
type pattern struct {
	segs []segment
}

type segment struct {
	lit      string // a literal segment (escaped as in the route)
	param    string // a ":name" segment's name
	wildcard bool   // the final "*"
}

// parsePattern splits a route path into segments. It is lenient: the
// tenant package validates route paths; here anything is rendered safely.
func parsePattern(path string) pattern {
	var p pattern
	path = strings.TrimPrefix(path, "/")
	if path == "" {
		return p
	}
	parts := strings.Split(path, "/")
	for i, s := range parts {
		switch {
		case s == "*" && i == len(parts)-1:
			p.segs = append(p.segs, segment{wildcard: true})
		case len(s) > 1 && s[0] == ':':
			p.segs = append(p.segs, segment{param: s[1:]})
		default:
			p.segs = append(p.segs, segment{lit: s})
		}
	}
	return p
}

// dynamic reports whether the pattern has a parameter or a wildcard.
func (p pattern) dynamic() bool {
	for _, s := range p.segs {
		if s.param != "" || s.wildcard {
			return true
		}
	}
	return false
}

// params returns the names of the ":name" segments, in order, and
// WildcardParam for a final "*".
func (p pattern) params() []string {
	var out []string
	for _, s := range p.segs {
		switch {
		case s.param != "":
			out = append(out, s.param)
		case s.wildcard:
			out = append(out, wildcardName(p))
		}
	}
	return out
}

// wildcardName is WildcardParam, suffixed with "_" until it names no
// ":name" segment of the same pattern.
func wildcardName(p pattern) string {
	name := WildcardParam
	for {
		taken := false
		for _, s := range p.segs {
			if s.param == name {
				taken = true
			}
		}
		if !taken {
			return name
		}
		name += "_"
	}
}

// template renders the pattern in the Bazaar's routeTemplate syntax:
// "/forecast/:city", with characters outside the template grammar
// percent-encoded so the result always satisfies isValidRouteTemplate.
func (p pattern) template() string {
	if len(p.segs) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, s := range p.segs {
		b.WriteByte('/')
		switch {
		case s.param != "":
			b.WriteByte(':')
			b.WriteString(escapeTemplate(s.param))
		case s.wildcard:
			b.WriteByte(':')
			b.WriteString(wildcardName(p))
		default:
			b.WriteString(escapeTemplate(s.lit))
		}
	}
	return b.String()
}

// escapeTemplate percent-encodes every byte outside [a-zA-Z0-9_.\-~] so a
// template always satisfies ValidRouteTemplate. The Bazaar rules check for
// ".." and "://" after percent-decoding, so a ":" and a "." next to another
// "." are encoded twice ("%253A", "%252E"): decoded once they stay escaped.
func escapeTemplate(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '~':
			b.WriteByte(c)
		case c == '.' && !(i+1 < len(s) && s[i+1] == '.') && !(i > 0 && s[i-1] == '.'):
			b.WriteByte(c)
		case c == '.' || c == ':':
			b.WriteString("%25")
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// PathParams matches a concrete request path (tenant-relative, as the
// worker sees it, escaped or not; a query is ignored) against a route path
// pattern, comparing percent-decoded segments, and returns the values of
// its ":name" segments, and of a final "*" under WildcardParam. It returns
// nil when the path does not match or the pattern has no parameters. The
// payment stage passes the result to BazaarExtensionWith so the 402's
// info.input.pathParams carries this request's values.
func PathParams(routePath, requestPath string) map[string]string {
	p := parsePattern(routePath)
	if !p.dynamic() {
		return nil
	}
	if i := strings.IndexByte(requestPath, '?'); i >= 0 {
		requestPath = requestPath[:i]
	}
	parts := strings.Split(strings.TrimPrefix(requestPath, "/"), "/")
	for i, seg := range parts {
		if dec, err := url.PathUnescape(seg); err == nil {
			parts[i] = dec
		}
	}
	out := map[string]string{}
	for i, s := range p.segs {
		if s.wildcard {
			out[wildcardName(p)] = strings.Join(parts[min(i, len(parts)):], "/")
			return out
		}
		if i >= len(parts) {
			return nil
		}
		switch {
		case s.param != "":
			if parts[i] == "" {
				return nil
			}
			out[s.param] = parts[i]
		case s.lit != parts[i]:
			return nil
		}
	}
	if len(parts) != len(p.segs) {
		return nil
	}
	return out
}

// ValidRouteTemplate applies the Bazaar's routeTemplate rules: non-empty,
// starting with "/", only [a-zA-Z0-9_/:.\-~%], and neither ".." nor "://"
// once percent-decoded.
func ValidRouteTemplate(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_/:.-~%", c) >= 0) {
			return false
		}
	}
	dec := percentDecode(s)
	return !strings.Contains(dec, "..") && !strings.Contains(dec, "://")
}

// percentDecode decodes %XX escapes, leaving malformed ones as they are.
func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
