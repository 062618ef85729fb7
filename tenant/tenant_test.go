package tenant_test

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/tenant"
)

const registryForm = `{"tenants":[
 {"slug":"acme","workerName":"tenant-acme-worker","plan":"PRO","hosts":["acme.api.402claw.dev"],
  "priceUsd":"0.01","x402Enabled":true,"usageLimit":{"dailyRequests":100,"monthlyRequests":1000},
  "spendLimit":{"dailySpendUsd":"5","monthlySpendUsd":50},"limits":{"cpu_ms":150,"subrequests":"20"},
  "rateLimit":{"perCaller":{"requests":10,"windowSeconds":60}},"owner":"u1","directory":"data"},
 {"slug":"beta","workerName":"beta-w","priceUsd":0.002}
]}`

const hostForm = `{"byHost":{"ACME.api.402claw.dev:443":{"slug":"acme","workerName":"tenant-acme-worker"}},
 "bySlug":{"acme":{"slug":"acme","workerName":"tenant-acme-worker","plan":"pro","priceUsd":0.01,"x402Enabled":true,
  "usageLimit":{"dailyRequests":100,"monthlyRequests":1000},"spendLimit":{"dailySpendUsd":5,"monthlySpendUsd":"50.000"},
  "limits":{"cpuMs":150,"subRequests":20},"rateLimit":{"perCaller":{"requests":10,"windowSeconds":60}},
  "ownerUserId":"u1","directory":"data"},
  "beta":{"workerName":"beta-w","slug":"beta","priceUsd":"0.002"}}}`

func TestBothFormsParseToTheSameDirectory(t *testing.T) {
	t.Parallel()
	a, err := tenant.ParseDirectory([]byte(registryForm))
	require.NoError(t, err)
	b, err := tenant.ParseDirectory([]byte(hostForm))
	require.NoError(t, err)
	ta, tb := a.Tenants(), b.Tenants()
	require.Len(t, ta, 2)
	for i := range ta {
		require.Equal(t, ta[i].Slug, tb[i].Slug)
		require.Equal(t, ta[i].Hosts, tb[i].Hosts)
		require.True(t, ta[i].PriceUSD.Equal(tb[i].PriceUSD), ta[i].Slug)
		require.True(t, ta[i].SpendLimit.MonthlySpendUSD.Equal(tb[i].SpendLimit.MonthlySpendUSD))
		ta[i].PriceUSD, tb[i].PriceUSD = decimal.Zero, decimal.Zero
		ta[i].SpendLimit, tb[i].SpendLimit = tenant.SpendLimit{}, tenant.SpendLimit{}
		require.Equal(t, ta[i], tb[i])
	}
	acme, ok := a.Lookup("acme")
	require.True(t, ok)
	require.Equal(t, "pro", acme.Plan)
	require.Equal(t, 150, acme.Limits.CPUMs)
	require.Equal(t, 20, acme.Limits.SubRequests)
	require.Equal(t, "u1", acme.OwnerUserID)
	require.True(t, acme.Charges())
	beta, _ := a.Lookup("beta")
	require.Equal(t, "free", beta.Plan)
	require.False(t, beta.Charges(), "x402Enabled is off")
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	a, err := tenant.ParseDirectory([]byte(registryForm))
	require.NoError(t, err)
	data, err := a.MarshalJSON()
	require.NoError(t, err)
	b, err := tenant.ParseDirectory(data)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(a.Tenants()), fmt.Sprint(b.Tenants()))
}

func TestValidationNamesTenantAndField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, json, tenant, field string
	}{
		{"duplicate slug", `{"tenants":[{"slug":"a","workerName":"w"},{"slug":"a","workerName":"x"}]}`, "a", "slug"},
		{"duplicate host", `{"tenants":[{"slug":"a","workerName":"w","hosts":["h.dev"]},{"slug":"b","workerName":"x","hosts":["H.dev:80"]}]}`, "b", "hosts"},
		{"bad slug", `{"tenants":[{"slug":"Bad_Slug","workerName":"w"}]}`, "Bad_Slug", "slug"},
		{"leading dash", `{"tenants":[{"slug":"-a","workerName":"w"}]}`, "-a", "slug"},
		{"negative price", `{"tenants":[{"slug":"a","workerName":"w","priceUsd":"-0.01"}]}`, "a", "priceUsd"},
		{"seven decimals", `{"tenants":[{"slug":"a","workerName":"w","priceUsd":0.0000001}]}`, "a", "priceUsd"},
		{"price not a number", `{"tenants":[{"slug":"a","workerName":"w","priceUsd":"ten"}]}`, "a", "priceUsd"},
		{"missing worker", `{"tenants":[{"slug":"a"}]}`, "a", "workerName"},
		{"negative quota", `{"tenants":[{"slug":"a","workerName":"w","usageLimit":{"dailyRequests":-1}}]}`, "a", "usageLimit.dailyRequests"},
		{"bad spend", `{"tenants":[{"slug":"a","workerName":"w","spendLimit":{"monthlySpendUsd":"1.0000001"}}]}`, "a", "spendLimit.monthlySpendUsd"},
		{"bad rate", `{"tenants":[{"slug":"a","workerName":"w","rateLimit":{"global":{"requests":5}}}]}`, "a", "rateLimit.global"},
		{"bad payTo", `{"tenants":[{"slug":"a","workerName":"w","payTo":"0x12"}]}`, "a", "payTo"},
		{"bySlug key differs", `{"bySlug":{"a":{"slug":"b","workerName":"w"}}}`, "a", "slug"},
		{"byHost conflicts", `{"bySlug":{"a":{"workerName":"w"}},"byHost":{"a.dev":{"slug":"a","workerName":"other"}}}`, "a", "workerName"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tenant.ParseDirectory([]byte(tc.json))
			require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
			var ve *tenant.ValidationError
			require.True(t, errors.As(err, &ve), "%v", err)
			require.Equal(t, tc.tenant, ve.Tenant)
			require.Equal(t, tc.field, ve.Field)
			require.Contains(t, err.Error(), tc.field)
		})
	}
}

func TestMalformedDirectories(t *testing.T) {
	t.Parallel()
	for _, in := range []string{``, `[]`, `{}`, `{"tenants":{}}`, `{"tenants":[1]}`, `{"tenants":[]} {}`, `{"tenants":[]} ]`, `{"tenants":[]}}`, `nul`} {
		_, err := tenant.ParseDirectory([]byte(in))
		require.ErrorIs(t, err, tenant.ErrInvalidDirectory, in)
	}
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[]}`))
	require.NoError(t, err)
	require.Equal(t, 0, d.Len())
}

func TestLenientOverrides(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[
	 {"slug":"a","workerName":"w","limits":{"cpuMs":-5,"subRequests":"lots"}},
	 {"slug":"b","workerName":"w","limits":{"cpuMs":99.9,"subrequests":"7.5"}}]}`))
	require.NoError(t, err)
	a, _ := d.Lookup("a")
	require.Equal(t, 0, a.Limits.CPUMs)
	require.Equal(t, 0, a.Limits.SubRequests)
	b, _ := d.Lookup("b")
	require.Equal(t, 99, b.Limits.CPUMs)
	require.Equal(t, 7, b.Limits.SubRequests)
}

func TestByHostWithoutSlugTakesFirstLabel(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(`{"byHost":{"weather.example.com":{"workerName":"w"}}}`))
	require.NoError(t, err)
	w, ok := d.Lookup("weather")
	require.True(t, ok)
	require.Equal(t, []string{"weather.example.com"}, w.Hosts)
}

func TestResolve(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(registryForm))
	require.NoError(t, err)
	cases := []struct {
		host, path string
		slug, rest string
		byHost     bool
		err        error
	}{
		{"acme.api.402claw.dev", "/rows", "acme", "/rows", true, nil},
		{"ACME.API.402claw.dev:8443", "/rows?x", "acme", "/rows?x", true, nil},
		{"acme.api.402claw.dev.", "/", "acme", "/", true, nil},
		{"gw.local", "/t/beta/rows/1", "beta", "/rows/1", false, nil},
		{"gw.local", "/t/beta", "beta", "/", false, nil},
		{"gw.local", "/t/beta/", "beta", "/", false, nil},
		{"acme.api.402claw.dev", "/t/beta/x", "acme", "/t/beta/x", true, nil},    // host wins
		{"127.0.0.1:8402", "/t/acme/a%2Fb", "", "", false, tenant.ErrBadRequest}, // encoded slash: refused since the traversal finding
		{"[::1]:8402", "/t/acme/x", "acme", "/x", false, nil},
		{"gw.local", "/t/nobody/x", "", "", false, tenant.ErrNotFound},
		{"gw.local", "/rows", "", "", false, tenant.ErrNotFound},
		{"gw.local", "/t/", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/Beta/x", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/be%2Fta/x", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/../admin", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/beta/../acme/x", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/beta/%2e%2E/x", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/beta/./x", "", "", false, tenant.ErrBadRequest},
		{"gw.local", "/t/beta/...", "beta", "/...", false, nil},
		{"", "/t/beta/x", "", "", false, tenant.ErrBadRequest},
		{"bad host!", "/t/beta/x", "", "", false, tenant.ErrBadRequest},
		{strings.Repeat("a", 300), "/t/beta/x", "", "", false, tenant.ErrBadRequest},
		{"a:b:c", "/t/beta/x", "", "", false, tenant.ErrBadRequest},
		{"h:99999999", "/t/beta/x", "", "", false, tenant.ErrBadRequest},
		{"xn--bcher-kva.example", "/t/beta/x", "beta", "/x", false, nil},
	}
	for _, tc := range cases {
		res, err := tenant.ResolveTenant(d, tc.host, tc.path)
		if tc.err != nil {
			require.ErrorIs(t, err, tc.err, "%s %s", tc.host, tc.path)
			continue
		}
		require.NoError(t, err, "%s %s", tc.host, tc.path)
		require.Equal(t, tc.slug, res.Tenant.Slug)
		require.Equal(t, tc.rest, res.Path)
		require.Equal(t, tc.byHost, res.ByHost)
	}
}

func TestRegistryKeepsOldDirectoryOnBadInput(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(registryForm))
	require.NoError(t, err)
	r := tenant.NewRegistry(d)
	_, err = r.Replace([]byte(`{"tenants":[{"slug":"x"}]}`))
	require.Error(t, err)
	require.Same(t, d, r.Load())
	require.Equal(t, 0, tenant.NewRegistry(nil).Load().Len())
}

func TestRegistrySwapUnderLoad(t *testing.T) {
	t.Parallel()
	one, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"a","workerName":"w1"}]}`))
	require.NoError(t, err)
	two, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"a","workerName":"w2"}]}`))
	require.NoError(t, err)
	r := tenant.NewRegistry(one)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				res, err := r.Load().Resolve("gw", "/t/a/x")
				if err != nil || (res.Tenant.WorkerName != "w1" && res.Tenant.WorkerName != "w2") {
					t.Errorf("resolve during swap: %v %v", res, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 500; i++ {
		if i%2 == 0 {
			r.Swap(two)
		} else {
			r.Swap(one)
		}
	}
	wg.Wait()
}

func FuzzParseDirectory(f *testing.F) {
	f.Add([]byte(registryForm))
	f.Add([]byte(hostForm))
	f.Add([]byte(`{"tenants":[{"slug":"a","workerName":"w","priceUsd":"1e-7"}]}`))
	f.Add([]byte(`{"byHost":{"[::1]:80":{"workerName":"w"}}}`))
	f.Add([]byte(weatherDirectory))
	f.Add([]byte(`{"tenants":[{"slug":"a","workerName":"w","schemes":["exact"],"cookies":true,"routes":[{"method":"get","path":"/:x/*","priceUsd":0.5,"maxPriceUsd":"1","schemes":["upto"],"discovery":{"a":"<b>"}},{"path":"/:y/*"}]}]}`))
	f.Add([]byte(`{"tenants":[{"slug":"a","workerName":"w","routes":[{"path":"/a/"},{"path":"/é/:a"},{"path":"/"},{"path":"/*","priceUsd":""}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := tenant.ParseDirectory(data)
		if err != nil {
			if !errors.Is(err, tenant.ErrInvalidDirectory) {
				t.Fatalf("error does not wrap ErrInvalidDirectory: %v", err)
			}
			return
		}
		// A valid directory round-trips.
		out, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		d2, err := tenant.ParseDirectory(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if d2.Len() != d.Len() {
			t.Fatalf("round trip changed the tenant count")
		}
		// Exactly: routes, schemes, cookies and everything else.
		out2, err := d2.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the directory:\n%s\n%s", out, out2)
		}
		for _, tn := range d.Tenants() {
			for i, r := range tn.Routes {
				// Every route prices a request to its own pattern.
				p := tn.PriceFor(r.Method, strings.ReplaceAll(r.Path, "*", "rest"))
				if p.Route == nil {
					t.Fatalf("routes[%d] %q does not match its own path", i, r.Path)
				}
			}
		}
	})
}

func FuzzResolve(f *testing.F) {
	d, err := tenant.ParseDirectory([]byte(registryForm))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][2]string{{"acme.api.402claw.dev:443", "/x"}, {"gw", "/t/beta/%2e%2e/x"}, {"[::1]", "/t/acme"}, {"", ""}, {"ÄCME.dev", "/t/\x00/"}, {"gw", "/t/beta/..%2fpaid/x"}, {"acme.api.402claw.dev", "/%2e%2E/%5c"}, {"gw", "/t/beta/a%20b/%C3%A9"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		res, err := d.Resolve(host, path)
		if err != nil {
			if !errors.Is(err, tenant.ErrNotFound) && !errors.Is(err, tenant.ErrBadRequest) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if res.Tenant == nil || !strings.HasPrefix(res.Path, "/") && !res.ByHost {
			t.Fatalf("bad resolution %+v for %q %q", res, host, path)
		}
		// An accepted path never decodes to a traversal or a backslash.
		p := res.Path
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		dec := lenientUnescape(p)
		padded := "/" + dec + "/"
		if strings.Contains(padded, "/../") || strings.Contains(padded, "/./") || strings.Contains(dec, "\\") {
			t.Fatalf("accepted %q %q, which decodes to %q", host, path, dec)
		}
	})
}

func BenchmarkResolve10k(b *testing.B) {
	ts := make([]tenant.Tenant, 10000)
	for i := range ts {
		ts[i] = tenant.Tenant{Slug: fmt.Sprintf("t%05d", i), WorkerName: "w", Plan: "pro", Hosts: []string{fmt.Sprintf("t%05d.api.dev", i)}}
	}
	d, err := tenant.NewDirectory(ts)
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Resolve("gw.local:8402", "/t/t04242/rows"); err != nil {
			b.Fatal(err)
		}
	}
}

// lenientUnescape decodes every valid %XX escape and keeps the rest as is,
// as the most forgiving worker would.
func lenientUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestEncodedTraversalRefused: the security finding. A tenant path that a
// decoder could turn into another tenant's path, or a parent directory, is
// 400 bad_request, whether the tenant was found by path or by host.
func TestEncodedTraversalRefused(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(registryForm))
	require.NoError(t, err)
	bad := []string{
		"/..%2fpaid1/x", "/..%2Fpaid1/x", "/..%5cpaid1/x", "/..%5Cpaid1/x", "/..\\paid1/x", "/a\\b",
		"/%2e%2e%2fpaid1/x", "/%2E%2e/paid1", "/%2e%2E%2Fx", "/.%2e/x", "/%2e./x", "/%2e/x", "/x/%2E",
		"/x/..", "/x/.", "/a%2fb", "/a%2F", "/%5c", "/x/%2e%2e%5cy", "/ok/..%2F..%2Fetc",
	}
	for _, tail := range bad {
		for _, in := range [][2]string{{"gw.local", "/t/beta" + tail}, {"acme.api.402claw.dev", tail}} {
			_, err := d.Resolve(in[0], in[1])
			require.ErrorIs(t, err, tenant.ErrBadRequest, "%s %s", in[0], in[1])
		}
	}
	// The first finding, as reported: the free tenant's prefix with an
	// encoded slash reached the worker as /..%2fpaid1/x.
	_, err = d.Resolve("gw.local", "/t/beta/..%2fpaid1/x")
	require.ErrorIs(t, err, tenant.ErrBadRequest)
	require.Contains(t, err.Error(), "encoded slash")
	_, err = d.Resolve("gw.local", "/t/beta/a%5Cb")
	require.Contains(t, err.Error(), "backslash")

	// Ordinary escapes, and dots that are not whole segments, still pass.
	good := []string{"/a%20b", "/caf%C3%A9", "/%C3%A9/x", "/a%2e", "/.well-known/x", "/...", "/a..b", "/%2e%2e%2e", "/v1.2/x", "/a%252fb", "/x?q=..%2f\\"}
	for _, tail := range good {
		res, err := d.Resolve("gw.local", "/t/beta"+tail)
		require.NoError(t, err, tail)
		require.Equal(t, tail, res.Path)
		res, err = d.Resolve("acme.api.402claw.dev", tail)
		require.NoError(t, err, tail)
		require.Equal(t, tail, res.Path)
	}
}
