package demo

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Paging bounds.
const (
	DefaultLimit = 20
	MaxLimit     = 100
	maxOffset    = 1_000_000
	maxQueryText = 100
	maxCountries = 50
)

// Query is a parsed list request.
type Query struct {
	// Countries are upper-case ISO alpha-2 codes; empty means all.
	Countries []string
	// MinPopulation is the least population a row may have (0: no bound).
	MinPopulation int64
	// Text is matched case-insensitively against city names (lower-cased).
	Text   string
	Limit  int
	Offset int
	// Format is "csv", "json" or "" (let the Accept header decide).
	Format string
	// Enrich asks for outbound enrichment of the page's rows.
	Enrich bool
}

// ParamError is a bad query parameter; the API answers it with 400.
type ParamError struct {
	Param   string
	Message string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Message }

func badParam(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// ParseQuery reads the list parameters from v. Unknown parameters are
// ignored; of a repeated parameter the first counts.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit}
	if s, ok := first(v, "country"); ok {
		for code := range strings.SplitSeq(s, ",") {
			code = strings.TrimSpace(code)
			if code == "" {
				continue
			}
			if !isAlpha2(code) {
				return Query{}, badParam("country", "%q is not a two-letter country code", clip(code))
			}
			if len(q.Countries) == maxCountries {
				return Query{}, badParam("country", "at most %d countries", maxCountries)
			}
			q.Countries = append(q.Countries, strings.ToUpper(code))
		}
	}
	if s, ok := first(v, "min_population"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 0 {
			return Query{}, badParam("min_population", "%q is not a non-negative whole number", clip(s))
		}
		q.MinPopulation = n
	}
	if s, ok := first(v, "q"); ok {
		s = strings.TrimSpace(s)
		if len(s) > maxQueryText {
			return Query{}, badParam("q", "longer than %d bytes", maxQueryText)
		}
		q.Text = strings.ToLower(s)
	}
	if s, ok := first(v, "limit"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > MaxLimit {
			return Query{}, badParam("limit", "%q is not a whole number from 1 to %d", clip(s), MaxLimit)
		}
		q.Limit = n
	}
	if s, ok := first(v, "offset"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > maxOffset {
			return Query{}, badParam("offset", "%q is not a whole number from 0 to %d", clip(s), maxOffset)
		}
		q.Offset = n
	}
	if s, ok := first(v, "format"); ok {
		switch f := strings.ToLower(strings.TrimSpace(s)); f {
		case "csv", "json":
			q.Format = f
		default:
			return Query{}, badParam("format", "%q is neither csv nor json", clip(s))
		}
	}
	if s, ok := first(v, "enrich"); ok {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "1", "true", "yes":
			q.Enrich = true
		case "0", "false", "no", "":
		default:
			return Query{}, badParam("enrich", "%q is not 1 or 0", clip(s))
		}
	}
	return q, nil
}

func first(v url.Values, key string) (string, bool) {
	vs, ok := v[key]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

func isAlpha2(s string) bool {
	if len(s) != 2 {
		return false
	}
	for i := 0; i < 2; i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// clip shortens a client value quoted back in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// WantsCSV reports whether an Accept header prefers text/csv to JSON: CSV
// needs an explicit text/csv (or text/*) range whose quality is positive and
// at least that of application/json (application/*, */*). A missing or
// unreadable header means JSON.
func WantsCSV(accept string) bool {
	var csvQ, jsonQ float64 = -1, -1
	for part := range strings.SplitSeq(accept, ",") {
		mediaType, params, _ := strings.Cut(part, ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, val, ok := strings.Cut(p, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
		}
		switch mediaType {
		case "text/csv", "text/*":
			csvQ = max(csvQ, q)
		case "application/json", "application/*", "*/*":
			jsonQ = max(jsonQ, q)
		}
	}
	return csvQ > 0 && csvQ >= jsonQ
}
