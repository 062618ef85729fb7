package tenant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/limits"
)

// ErrInvalidDirectory is wrapped by every error that rejects a directory.
var ErrInvalidDirectory = errors.New("tenant: invalid directory")

// MaxDirectorySize bounds the JSON a directory is parsed from.
const MaxDirectorySize = 64 << 20

// ValidationError names the tenant and the field that made a directory
// invalid. It wraps ErrInvalidDirectory.
type ValidationError struct {
	Tenant string // the slug, or the host / index that locates the entry
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("tenant directory: tenant %q: %s", e.Tenant, e.Reason)
	}
	return fmt.Sprintf("tenant directory: tenant %q: field %q: %s", e.Tenant, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidDirectory) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidDirectory }

// rawTenant is the JSON shape of one tenant, lenient where the design is
// (prices as strings or numbers, two spellings of each limit).
type rawTenant struct {
	Slug        *string         `json:"slug"`
	WorkerName  *string         `json:"workerName"`
	Plan        *string         `json:"plan"`
	Hosts       []string        `json:"hosts"`
	Host        *string         `json:"host"`
	PriceUSD    json.RawMessage `json:"priceUsd"`
	X402Enabled *bool           `json:"x402Enabled"`
	UsageLimit  *struct {
		DailyRequests   json.RawMessage `json:"dailyRequests"`
		MonthlyRequests json.RawMessage `json:"monthlyRequests"`
	} `json:"usageLimit"`
	SpendLimit *struct {
		DailySpendUSD   json.RawMessage `json:"dailySpendUsd"`
		MonthlySpendUSD json.RawMessage `json:"monthlySpendUsd"`
	} `json:"spendLimit"`
	Limits    map[string]json.RawMessage `json:"limits"`
	RateLimit *struct {
		PerCaller *rawRate `json:"perCaller"`
		Global    *rawRate `json:"global"`
	} `json:"rateLimit"`
	OwnerUserID *string         `json:"ownerUserId"`
	Owner       *string         `json:"owner"`
	Directory   *string         `json:"directory"`
	PayTo       *string         `json:"payTo"`
	Schemes     json.RawMessage `json:"schemes"`
	Cookies     *bool           `json:"cookies"`
	Routes      json.RawMessage `json:"routes"`
}

// rawRoute is the JSON shape of one route.
type rawRoute struct {
	Method      *string         `json:"method"`
	Path        *string         `json:"path"`
	PriceUSD    json.RawMessage `json:"priceUsd"`
	MaxPriceUSD json.RawMessage `json:"maxPriceUsd"`
	Schemes     json.RawMessage `json:"schemes"`
	Description *string         `json:"description"`
	MimeType    *string         `json:"mimeType"`
	Discovery   json.RawMessage `json:"discovery"`
}

type rawRate struct {
	Requests      json.RawMessage `json:"requests"`
	WindowSeconds json.RawMessage `json:"windowSeconds"`
}

type rawDirectory struct {
	ByHost  map[string]json.RawMessage `json:"byHost"`
	BySlug  map[string]json.RawMessage `json:"bySlug"`
	Tenants []json.RawMessage          `json:"tenants"`
}

// ParseDirectory parses and validates a directory in either JSON form.
// Any problem rejects the whole directory with an error wrapping
// ErrInvalidDirectory; a *ValidationError names the tenant and the field.
func ParseDirectory(data []byte) (*Directory, error) {
	if len(data) > MaxDirectorySize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidDirectory, MaxDirectorySize)
	}
	var raw rawDirectory
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDirectory, err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, fmt.Errorf("%w: trailing data after the directory object", ErrInvalidDirectory)
	}
	if raw.Tenants == nil && raw.ByHost == nil && raw.BySlug == nil {
		return nil, fmt.Errorf(`%w: expected a "tenants" array or "byHost"/"bySlug" objects`, ErrInvalidDirectory)
	}
	var tenants []Tenant
	for i, msg := range raw.Tenants {
		t, err := parseTenant(msg, fmt.Sprintf("tenants[%d]", i), "")
		if err != nil {
			return nil, err
		}
		tenants = append(tenants, t)
	}
	// bySlug entries first, then byHost entries join them; map order is
	// random, so walk keys sorted to keep errors deterministic.
	slugIndex := map[string]int{}
	for _, slug := range sortedKeys(raw.BySlug) {
		t, err := parseTenant(raw.BySlug[slug], slug, slug)
		if err != nil {
			return nil, err
		}
		if t.Slug != slug {
			return nil, &ValidationError{Tenant: slug, Field: "slug", Reason: fmt.Sprintf("%q differs from its bySlug key", t.Slug)}
		}
		slugIndex[slug] = len(tenants)
		tenants = append(tenants, t)
	}
	for _, host := range sortedKeys(raw.ByHost) {
		h, ok := NormalizeHost(host)
		if !ok {
			return nil, &ValidationError{Tenant: host, Field: "byHost", Reason: "not a valid host name"}
		}
		def := ""
		if i := strings.IndexByte(h, '.'); i > 0 {
			def = h[:i]
		} else {
			def = h
		}
		t, err := parseTenant(raw.ByHost[host], host, def)
		if err != nil {
			return nil, err
		}
		if i, ok := slugIndex[t.Slug]; ok {
			prev := &tenants[i]
			if prev.WorkerName != t.WorkerName {
				return nil, &ValidationError{Tenant: t.Slug, Field: "workerName", Reason: fmt.Sprintf("byHost %q names worker %q but bySlug names %q", host, t.WorkerName, prev.WorkerName)}
			}
			prev.Hosts = appendHost(prev.Hosts, h)
			for _, extra := range t.Hosts {
				prev.Hosts = appendHost(prev.Hosts, extra)
			}
			continue
		}
		t.Hosts = appendHost(t.Hosts, h)
		slugIndex[t.Slug] = len(tenants)
		tenants = append(tenants, t)
	}
	return NewDirectory(tenants)
}

func appendHost(hosts []string, h string) []string {
	for _, x := range hosts {
		if x == h {
			return hosts
		}
	}
	return append(hosts, h)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parseTenant(msg json.RawMessage, where, defaultSlug string) (Tenant, error) {
	var r rawTenant
	if err := json.Unmarshal(msg, &r); err != nil {
		return Tenant{}, &ValidationError{Tenant: where, Reason: "not a tenant object: " + err.Error()}
	}
	var t Tenant
	switch {
	case r.Slug != nil:
		t.Slug = *r.Slug
	default:
		t.Slug = defaultSlug
	}
	name := t.Slug
	if name == "" {
		name = where
	}
	fail := func(field, reason string) (Tenant, error) {
		return Tenant{}, &ValidationError{Tenant: name, Field: field, Reason: reason}
	}
	if !ValidSlug(t.Slug) {
		return fail("slug", fmt.Sprintf("%q does not match ^[a-z0-9][a-z0-9-]{0,62}$", t.Slug))
	}
	if r.WorkerName == nil || strings.TrimSpace(*r.WorkerName) == "" {
		return fail("workerName", "is required")
	}
	t.WorkerName = strings.TrimSpace(*r.WorkerName)
	if len(t.WorkerName) > 255 {
		return fail("workerName", "longer than 255 characters")
	}
	plan := ""
	if r.Plan != nil {
		plan = *r.Plan
	}
	t.Plan = limits.Policy{}.NormalizePlan(plan)
	hosts := r.Hosts
	if r.Host != nil && *r.Host != "" {
		hosts = append(hosts, *r.Host)
	}
	for _, h := range hosts {
		nh, ok := NormalizeHost(h)
		if !ok {
			return fail("hosts", fmt.Sprintf("%q is not a valid host name", h))
		}
		t.Hosts = appendHost(t.Hosts, nh)
	}
	var err error
	if t.PriceUSD, err = parseMoney(r.PriceUSD); err != nil {
		return fail("priceUsd", err.Error())
	}
	if r.X402Enabled != nil {
		t.X402Enabled = *r.X402Enabled
	}
	if u := r.UsageLimit; u != nil {
		if t.UsageLimit.DailyRequests, err = parseCount(u.DailyRequests); err != nil {
			return fail("usageLimit.dailyRequests", err.Error())
		}
		if t.UsageLimit.MonthlyRequests, err = parseCount(u.MonthlyRequests); err != nil {
			return fail("usageLimit.monthlyRequests", err.Error())
		}
	}
	if s := r.SpendLimit; s != nil {
		if t.SpendLimit.DailySpendUSD, err = parseMoney(s.DailySpendUSD); err != nil {
			return fail("spendLimit.dailySpendUsd", err.Error())
		}
		if t.SpendLimit.MonthlySpendUSD, err = parseMoney(s.MonthlySpendUSD); err != nil {
			return fail("spendLimit.monthlySpendUsd", err.Error())
		}
	}
	t.Limits = limits.Overrides{
		CPUMs:       lenientInt(r.Limits, "cpuMs", "cpu_ms"),
		SubRequests: lenientInt(r.Limits, "subRequests", "subrequests"),
	}
	if rl := r.RateLimit; rl != nil {
		if t.RateLimit.PerCaller, err = parseRate(rl.PerCaller); err != nil {
			return fail("rateLimit.perCaller", err.Error())
		}
		if t.RateLimit.Global, err = parseRate(rl.Global); err != nil {
			return fail("rateLimit.global", err.Error())
		}
	}
	switch {
	case r.OwnerUserID != nil:
		t.OwnerUserID = *r.OwnerUserID
	case r.Owner != nil:
		t.OwnerUserID = *r.Owner
	}
	if r.Directory != nil {
		t.Directory = strings.TrimSpace(*r.Directory)
	}
	if r.PayTo != nil && *r.PayTo != "" {
		if !isAddress(*r.PayTo) {
			return fail("payTo", fmt.Sprintf("%q is not a 0x-prefixed 20-byte hex address", *r.PayTo))
		}
		t.PayTo = *r.PayTo
	}
	if t.Schemes, err = parseSchemes(r.Schemes); err != nil {
		return fail("schemes", err.Error())
	}
	if r.Cookies != nil {
		t.Cookies = *r.Cookies
	}
	if t.Routes, err = parseRoutes(r.Routes); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			return fail(ve.Field, ve.Reason)
		}
		return fail("routes", err.Error())
	}
	return t, nil
}

// parseRoutes reads a "routes" array. Field checks beyond the JSON shape
// (path syntax, methods, schemes, ambiguity) are NewDirectory's, so that
// tenants built in Go are held to the same rules; strings are kept as given
// (not trimmed) so that a stored tenant reads back as it was saved.
func parseRoutes(msg json.RawMessage) ([]Route, error) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || string(msg) == "null" {
		return nil, nil
	}
	if msg[0] != '[' {
		return nil, errors.New("must be an array of routes")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(msg, &raws); err != nil {
		return nil, fmt.Errorf("not an array of route objects: %v", err)
	}
	if len(raws) > MaxRoutes {
		return nil, fmt.Errorf("lists %d routes, more than %d", len(raws), MaxRoutes)
	}
	routes := make([]Route, len(raws))
	for i, m := range raws {
		field := fmt.Sprintf("routes[%d]", i)
		fail := func(sub, reason string) ([]Route, error) {
			if sub != "" {
				field += "." + sub
			}
			return nil, &ValidationError{Field: field, Reason: reason}
		}
		var rr rawRoute
		if m = bytes.TrimSpace(m); len(m) == 0 || m[0] != '{' {
			return fail("", "not a route object")
		}
		if err := json.Unmarshal(m, &rr); err != nil {
			return fail("", "not a route object: "+err.Error())
		}
		r := &routes[i]
		if rr.Method != nil {
			r.Method = *rr.Method
		}
		if rr.Path == nil || *rr.Path == "" {
			return fail("path", "is required")
		}
		r.Path = *rr.Path
		var err error
		if r.PriceUSD, err = parseOptMoney(rr.PriceUSD); err != nil {
			return fail("priceUsd", err.Error())
		}
		if r.MaxPriceUSD, err = parseOptMoney(rr.MaxPriceUSD); err != nil {
			return fail("maxPriceUsd", err.Error())
		}
		if r.Schemes, err = parseSchemes(rr.Schemes); err != nil {
			return fail("schemes", err.Error())
		}
		if rr.Description != nil {
			r.Description = *rr.Description
		}
		if rr.MimeType != nil {
			r.MimeType = *rr.MimeType
		}
		if d := bytes.TrimSpace(rr.Discovery); len(d) > 0 && string(d) != "null" {
			if d[0] != '{' {
				return fail("discovery", "must be a JSON object")
			}
			r.Discovery = append(json.RawMessage(nil), d...)
		}
	}
	return routes, nil
}

// parseSchemes reads a list of scheme names; absent or null is nil.
func parseSchemes(msg json.RawMessage) ([]string, error) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || string(msg) == "null" {
		return nil, nil
	}
	var list []string
	if msg[0] != '[' || json.Unmarshal(msg, &list) != nil {
		return nil, errors.New("must be an array of scheme names")
	}
	if len(list) == 0 {
		return nil, nil
	}
	return list, nil
}

// parseOptMoney is parseMoney where absence (or null, or "") is nil rather
// than zero: a route without a price takes the tenant's.
func parseOptMoney(msg json.RawMessage) (*decimal.Decimal, error) {
	if _, ok, err := scalarText(msg); err != nil || !ok {
		return nil, err
	}
	d, err := parseMoney(msg)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func isAddress(s string) bool {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// parseMoney reads an exact, non-negative USD amount given as a JSON string
// or number, with at most six decimal places. Absent or null is zero.
func parseMoney(msg json.RawMessage) (decimal.Decimal, error) {
	text, ok, err := scalarText(msg)
	if err != nil || !ok {
		return decimal.Zero, err
	}
	if len(text) > 40 {
		return decimal.Zero, errors.New("is too long to be a price")
	}
	d, err := decimal.NewFromString(text)
	if err != nil {
		return decimal.Zero, fmt.Errorf("%q is not a decimal number", text)
	}
	if d.IsNegative() {
		return decimal.Zero, fmt.Errorf("%s is negative", text)
	}
	if !d.Equal(d.Truncate(MaxPriceDecimals)) {
		return decimal.Zero, fmt.Errorf("%s has more than %d decimal places", text, MaxPriceDecimals)
	}
	if d.GreaterThan(decimal.New(1, 12)) {
		return decimal.Zero, fmt.Errorf("%s is larger than 10^12 USD", text)
	}
	return d.Truncate(MaxPriceDecimals), nil
}

// parseCount reads a non-negative whole count; fractions are floored.
func parseCount(msg json.RawMessage) (int64, error) {
	text, ok, err := scalarText(msg)
	if err != nil || !ok {
		return 0, err
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number", text)
	}
	if f < 0 {
		return 0, fmt.Errorf("%s is negative", text)
	}
	if f > 1e15 {
		return 0, fmt.Errorf("%s is too large", text)
	}
	return int64(math.Floor(f)), nil
}

func parseRate(r *rawRate) (Rate, error) {
	if r == nil {
		return Rate{}, nil
	}
	req, err := parseCount(r.Requests)
	if err != nil {
		return Rate{}, fmt.Errorf("requests: %w", err)
	}
	win, err := parseCount(r.WindowSeconds)
	if err != nil {
		return Rate{}, fmt.Errorf("windowSeconds: %w", err)
	}
	if (req == 0) != (win == 0) {
		return Rate{}, errors.New("requests and windowSeconds must both be positive")
	}
	if win > 366*24*3600 {
		return Rate{}, errors.New("windowSeconds is longer than a year")
	}
	return Rate{Requests: req, WindowSeconds: win}, nil
}

// lenientInt reads the first present of keys as a limit override: a number
// or numeric string, floored; anything else is 0, meaning "use the plan".
func lenientInt(m map[string]json.RawMessage, keys ...string) int {
	for _, k := range keys {
		msg, ok := m[k]
		if !ok {
			continue
		}
		text, ok, err := scalarText(msg)
		if err != nil || !ok {
			return 0
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil || math.IsNaN(f) || f <= 0 {
			return 0
		}
		if f > math.MaxInt32 {
			return math.MaxInt32
		}
		return int(math.Floor(f))
	}
	return 0
}

// scalarText returns the text of a JSON number or string; ok is false for
// absent or null.
func scalarText(msg json.RawMessage) (string, bool, error) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || string(msg) == "null" {
		return "", false, nil
	}
	if msg[0] == '"' {
		var s string
		if err := json.Unmarshal(msg, &s); err != nil {
			return "", false, err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return "", false, nil
		}
		return s, true, nil
	}
	var n json.Number
	if err := json.Unmarshal(msg, &n); err != nil {
		return "", false, fmt.Errorf("must be a number or a numeric string, got %s", truncate(string(msg), 40))
	}
	return n.String(), true, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
