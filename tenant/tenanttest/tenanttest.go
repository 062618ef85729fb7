// Package tenanttest is the conformance suite of the tenant.Store port. Every
// adapter runs it against a fresh, empty store per subtest:
//
//	func TestTenantsConformance(t *testing.T) {
//		tenanttest.Run(t, func(t *testing.T) tenant.Store { return memory.NewTenants() })
//	}
//
// It checks what tenant.Store documents: full tenants (routes, schemes,
// discovery documents, limits, hosts, payTo, cookies) round-trip; SaveTenants
// replaces the whole set atomically, so that many concurrent readers only
// ever see one whole set (run it under -race); LoadTenants answers sorted by
// slug whatever the saved order; a set tenant.NewDirectory refuses changes
// nothing; a cancelled context is an error that wraps context.Canceled.
package tenanttest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// NewStore returns a fresh, empty store for one subtest. Stores that share a
// backend must isolate themselves (a schema, a database file).
type NewStore func(t *testing.T) tenant.Store

// Run runs the whole conformance suite.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s tenant.Store)
	}{
		{"Empty", testEmpty},
		{"RoundTrip", testRoundTrip},
		{"MaxRoutes", testMaxRoutes},
		{"Replace", testReplace},
		{"OrderIndependent", testOrderIndependent},
		{"InvalidChangesNothing", testInvalidChangesNothing},
		{"CallerOwnsResults", testCallerOwnsResults},
		{"ConcurrentReplace", testConcurrentReplace},
		{"ContextCancelled", testContextCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func dec(s string) *decimal.Decimal {
	d := decimal.RequireFromString(s)
	return &d
}

// Full returns n tenants that use every field of tenant.Tenant, routes
// included, with slugs "<tag>-000"... Values are chosen to be normalised on
// the way in (upper-case hosts with ports, lower-case methods, discovery
// with spaces and HTML characters), so a round trip compares what the
// directory keeps.
func Full(n int, tag string) []tenant.Tenant {
	out := make([]tenant.Tenant, n)
	for i := range out {
		slug := fmt.Sprintf("%s-%03d", tag, i)
		out[i] = tenant.Tenant{
			Slug: slug, WorkerName: "worker-" + tag, Plan: limits.Pro,
			Hosts:       []string{fmt.Sprintf("%s.API.example.com:8443", slug), slug + ".example.org"},
			PriceUSD:    *dec("0.012500"),
			X402Enabled: i%3 != 2,
			UsageLimit:  tenant.UsageLimit{DailyRequests: 100, MonthlyRequests: 2000 + int64(i)},
			SpendLimit:  tenant.SpendLimit{DailySpendUSD: *dec("12.5"), MonthlySpendUSD: *dec("100")},
			Limits:      limits.Overrides{CPUMs: 20, SubRequests: 10},
			RateLimit:   tenant.RateLimit{PerCaller: tenant.Rate{Requests: 5, WindowSeconds: 1}, Global: tenant.Rate{Requests: 100, WindowSeconds: 60}},
			OwnerUserID: "user-" + tag, Directory: "finance",
			PayTo:   "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
			Schemes: []string{"exact", "exact-permit2"},
			Cookies: i%2 == 0,
			Routes: []tenant.Route{
				{Method: "get", Path: "/quotes/:symbol", PriceUSD: dec("0.002"), Description: "Latest quote — €, ¥",
					MimeType: "application/json", Schemes: []string{"exact"},
					Discovery: json.RawMessage(` {"queryParams": {"at": {"type": "string"}}, "output": {"example": {"html": "<b>&</b>"}}} `)},
				{Path: "/llm/*", MaxPriceUSD: dec("0.50"), Schemes: []string{"upto", "batch-settlement"}},
				{Method: "GET", Path: "/health", PriceUSD: dec("0")},
				{Method: "POST", Path: "/quotes/:symbol", PriceUSD: dec("0.004"), MaxPriceUSD: dec("0.01")},
				{Path: "/"},
			},
		}
	}
	return out
}

// RequireSame fails t unless got holds the same tenants as want, in the same
// order, field for field (decimals by value: "0.0125" and "0.012500" are the
// same price).
func RequireSame(t testing.TB, want, got []tenant.Tenant, msgAndArgs ...any) {
	t.Helper()
	require.Len(t, got, len(want), msgAndArgs...)
	for i := range want {
		require.Equal(t, canonical(t, want[i]), canonical(t, got[i]), msgAndArgs...)
	}
}

// canonical is a tenant's JSON: every exported field, decimals written by
// value, so equal tenants give equal strings.
func canonical(t testing.TB, tn tenant.Tenant) string {
	t.Helper()
	b, err := json.Marshal(&tn)
	require.NoError(t, err)
	return string(b)
}

// normalised is want as the store must give it back: as NewDirectory holds
// it, sorted by slug.
func normalised(t testing.TB, want []tenant.Tenant) []tenant.Tenant {
	t.Helper()
	d, err := tenant.NewDirectory(want)
	require.NoError(t, err)
	return d.Tenants()
}

func load(t *testing.T, s tenant.Store) []tenant.Tenant {
	t.Helper()
	got, err := s.LoadTenants(context.Background())
	require.NoError(t, err)
	return got
}

func testEmpty(t *testing.T, s tenant.Store) {
	require.Empty(t, load(t, s))
	// Saving nothing into nothing is fine too.
	require.NoError(t, s.SaveTenants(context.Background(), nil))
	require.Empty(t, load(t, s))
	d, err := tenant.Load(context.Background(), s)
	require.NoError(t, err)
	require.Equal(t, 0, d.Len())
}

func testRoundTrip(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	in := Full(4, "rt")
	require.NoError(t, s.SaveTenants(ctx, in))
	got := load(t, s)
	want := normalised(t, in)
	RequireSame(t, want, got)

	// Spot checks of what normalisation and the round trip keep.
	g := got[0]
	require.Equal(t, []string{"rt-000.api.example.com", "rt-000.example.org"}, g.Hosts)
	require.True(t, g.PriceUSD.Equal(decimal.RequireFromString("0.0125")))
	require.Equal(t, "GET", g.Routes[0].Method)
	require.JSONEq(t, `{"queryParams":{"at":{"type":"string"}},"output":{"example":{"html":"<b>&</b>"}}}`, string(g.Routes[0].Discovery))
	require.Equal(t, "Latest quote — €, ¥", g.Routes[0].Description)
	require.Nil(t, g.Routes[1].PriceUSD, "an absent route price stays absent")
	require.NotNil(t, g.Routes[2].PriceUSD, `a "0" route price stays a price`)
	require.True(t, g.Routes[2].PriceUSD.IsZero())
	require.True(t, g.Cookies)
	require.False(t, got[1].Cookies)
	require.Equal(t, "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", g.PayTo)
	require.Equal(t, []string{"exact", "exact-permit2"}, g.Schemes)

	// The loaded set builds a directory that prices like the saved one.
	d, err := tenant.Load(ctx, s)
	require.NoError(t, err)
	lt, ok := d.Lookup("rt-000")
	require.True(t, ok)
	for _, c := range []struct{ method, path, pattern, price string }{
		{"GET", "/quotes/ABC", "/quotes/:symbol", "0.002"},
		{"POST", "/quotes/ABC", "/quotes/:symbol", "0.004"},
		{"PUT", "/llm/v1", "/llm/*", "0.0125"},
		{"GET", "/health", "/health", "0"},
		{"GET", "/", "/", "0.0125"},
		{"GET", "/nothing", "", "0.0125"},
	} {
		p := lt.PriceFor(c.method, c.path)
		require.Equal(t, c.pattern, p.Pattern, "%s %s", c.method, c.path)
		require.True(t, p.PriceUSD.Equal(decimal.RequireFromString(c.price)), "%s %s: %s", c.method, c.path, p.PriceUSD)
	}
	require.True(t, lt.PriceFor("POST", "/llm/x").MaxPriceUSD.Equal(decimal.RequireFromString("0.5")))
}

func testMaxRoutes(t *testing.T, s tenant.Store) {
	in := Full(1, "max")
	in[0].Routes = nil
	for i := range tenant.MaxRoutes {
		in[0].Routes = append(in[0].Routes, tenant.Route{Method: "GET", Path: fmt.Sprintf("/r/%d/:id", i), PriceUSD: dec(fmt.Sprintf("0.%06d", i))})
	}
	require.NoError(t, s.SaveTenants(context.Background(), in))
	RequireSame(t, normalised(t, in), load(t, s))
}

func testReplace(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	first := Full(3, "a")
	require.NoError(t, s.SaveTenants(ctx, first))
	// One tenant changes (a route more, cookies off), one goes, one comes.
	second := []tenant.Tenant{first[1], Full(1, "b")[0]}
	second[0].Routes = append(slices.Clone(second[0].Routes), tenant.Route{Path: "/new/*", PriceUSD: dec("1")})
	second[0].Cookies = false
	require.NoError(t, s.SaveTenants(ctx, second))
	RequireSame(t, normalised(t, second), load(t, s))
	// Saving the same set again changes nothing.
	require.NoError(t, s.SaveTenants(ctx, second))
	RequireSame(t, normalised(t, second), load(t, s))
	// Empty replaces everything.
	require.NoError(t, s.SaveTenants(ctx, []tenant.Tenant{}))
	require.Empty(t, load(t, s))
}

// testOrderIndependent: LoadTenants is sorted by slug, whatever the order
// the tenants were saved in.
func testOrderIndependent(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	in := append(Full(3, "zeta"), Full(3, "alpha")...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	require.NoError(t, s.SaveTenants(ctx, in))
	got := load(t, s)
	require.True(t, slices.IsSortedFunc(got, func(a, b tenant.Tenant) int {
		switch {
		case a.Slug < b.Slug:
			return -1
		case a.Slug > b.Slug:
			return 1
		}
		return 0
	}), "sorted by slug")
	require.Equal(t, "alpha-000", got[0].Slug)
	slices.Reverse(in)
	require.NoError(t, s.SaveTenants(ctx, in))
	RequireSame(t, got, load(t, s), "the same set saved in another order loads the same")
}

func testInvalidChangesNothing(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	good := Full(2, "ok")
	require.NoError(t, s.SaveTenants(ctx, good))
	want := normalised(t, good)

	dupHost := append(Full(2, "x"), tenant.Tenant{Slug: "other", WorkerName: "w", Hosts: []string{"OK-000.api.example.com"}})
	dupHost = append(dupHost, good[0])
	ambiguous := Full(1, "y")
	ambiguous[0].Routes = append(ambiguous[0].Routes, tenant.Route{Method: "GET", Path: "/quotes/:other"})
	badPath := Full(1, "z")
	badPath[0].Routes[1].Path = "/a/../b"
	badScheme := Full(1, "w")
	badScheme[0].Routes[0].Schemes = []string{"exact", "exact"}
	for name, set := range map[string][]tenant.Tenant{
		"duplicate host": dupHost, "ambiguous routes": ambiguous, "dot segment": badPath, "scheme twice": badScheme,
	} {
		err := s.SaveTenants(ctx, set)
		require.ErrorIs(t, err, tenant.ErrInvalidDirectory, name)
		RequireSame(t, want, load(t, s), "%s: the refused set changed the store", name)
	}
}

// testCallerOwnsResults: changing what was saved, or what was loaded,
// changes nothing stored.
func testCallerOwnsResults(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	in := Full(2, "own")
	require.NoError(t, s.SaveTenants(ctx, in))
	want := normalised(t, Full(2, "own"))
	in[0].Routes[0].Path = "/changed"
	in[0].Routes[0].Discovery[2] = 'X'
	in[0].Schemes[0] = "changed"
	in[0].Hosts[0] = "changed.example"
	*in[0].Routes[0].PriceUSD = decimal.RequireFromString("9")
	got := load(t, s)
	RequireSame(t, want, got)
	got[0].Routes[0].Path = "/changed"
	got[0].Routes[0].Schemes[0] = "changed"
	got[0].Routes[0].Discovery[2] = 'X'
	got[0].Hosts[0] = "changed.example"
	got[1].Routes = nil
	RequireSame(t, want, load(t, s))
}

// testConcurrentReplace: savers alternate two different sets while readers
// load; every load is one whole set, and every call succeeds.
func testConcurrentReplace(t *testing.T, s tenant.Store) {
	ctx := context.Background()
	sets := [2][]tenant.Tenant{Full(12, "one"), append(Full(7, "two"), Full(3, "one")...)}
	sets[1][7].Routes = sets[1][7].Routes[:2] // "one-000" differs between the sets
	wantJSON := map[string]int{}
	for i, set := range sets {
		wantJSON[joined(t, normalised(t, set))] = i
	}
	require.Len(t, wantJSON, 2)
	require.NoError(t, s.SaveTenants(ctx, sets[0]))

	const savers, saves, readers, reads = 4, 8, 8, 16
	var saved, loaded atomic.Int64
	var seen [2]atomic.Int64
	var wg sync.WaitGroup
	for w := range savers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range saves {
				if err := s.SaveTenants(ctx, sets[(i+w)%2]); err != nil {
					t.Errorf("save: %v", err)
					return
				}
				saved.Add(1)
			}
		}()
	}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range reads {
				got, err := s.LoadTenants(ctx)
				if err != nil {
					t.Errorf("load: %v", err)
					return
				}
				which, ok := wantJSON[joined(t, got)]
				if !ok {
					t.Errorf("a load saw neither whole set: %d tenants", len(got))
					return
				}
				seen[which].Add(1)
				loaded.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int64(savers*saves), saved.Load())
	require.Equal(t, int64(readers*reads), loaded.Load())
	require.Equal(t, loaded.Load(), seen[0].Load()+seen[1].Load())
	_, ok := wantJSON[joined(t, load(t, s))]
	require.True(t, ok, "the final state is one whole set")
}

func joined(t testing.TB, ts []tenant.Tenant) string {
	t.Helper()
	var b []byte
	for _, tn := range ts {
		b = append(b, canonical(t, tn)...)
		b = append(b, '\n')
	}
	return string(b)
}

func testContextCancelled(t *testing.T, s tenant.Store) {
	good := Full(2, "ctx")
	require.NoError(t, s.SaveTenants(context.Background(), good))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.LoadTenants(ctx)
	require.ErrorIs(t, err, context.Canceled)
	err = s.SaveTenants(ctx, Full(3, "other"))
	require.ErrorIs(t, err, context.Canceled)
	RequireSame(t, normalised(t, good), load(t, s), "a cancelled save changes nothing")
}

// Benchmark measures LoadTenants and SaveTenants of a 100-tenant directory
// with five routes each.
func Benchmark(b *testing.B, newStore func(b *testing.B) tenant.Store) {
	ctx := context.Background()
	set := Full(100, "bench")
	b.Run("Save", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.SaveTenants(ctx, set); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load", func(b *testing.B) {
		s := newStore(b)
		if err := s.SaveTenants(ctx, set); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			got, err := s.LoadTenants(ctx)
			if err != nil || len(got) != len(set) {
				b.Fatal(len(got), err)
			}
		}
	})
}
