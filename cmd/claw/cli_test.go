package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeGateway answers admin API paths from a table and records requests.
type fakeGateway struct {
	mu       sync.Mutex
	requests []string
	bodies   map[string][]byte
	auth     []string
	routes   map[string]func(w http.ResponseWriter, r *http.Request)
}

func newFake(t *testing.T, routes map[string]func(w http.ResponseWriter, r *http.Request)) (*fakeGateway, string) {
	f := &fakeGateway{routes: routes, bodies: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Method + " " + r.URL.Path
		f.mu.Lock()
		f.requests = append(f.requests, key)
		f.bodies[key] = body
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		h := f.routes[key]
		f.mu.Unlock()
		if h == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"ok":false,"error":"not_found","message":"no platform route `+r.URL.Path+`","requestId":"r"}`)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func jsonAnswer(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(data), 0o600))
	return p
}

func TestUsageErrors(t *testing.T) {
	_, base := newFake(t, nil)
	csv := writeFile(t, "d.csv", "a\n1\n")
	for _, tc := range []struct {
		token string
		args  []string
		want  string
	}{
		{"t", nil, "usage"},
		{"t", []string{"launch"}, `unknown command "launch"`},
		{"", []string{"deploy", csv}, "needs a token"},
		{"t", []string{"deploy"}, "one CSV file"},
		{"t", []string{"deploy", csv, "--price", "-1"}, "--price"},
		{"t", []string{"deploy", csv, "--price", "abc"}, "--price"},
		{"t", []string{"deploy", csv, "--slug", "Bad Slug"}, "slug"},
		{"t", []string{"deploy", csv, "--route", "GET rows"}, "--route"},
		{"t", []string{"deploy", csv, "--nope"}, "flag provided but not defined"},
		{"t", []string{"rm"}, "one slug"},
		{"t", []string{"rm", "Bad"}, "slug"},
		{"t", []string{"top", "--window", "year"}, "--window"},
		{"t", []string{"top", "--top", "0"}, "--top"},
		{"t", []string{"pay"}, "one URL"},
		{"t", []string{"pay", "ftp://x"}, "not an http"},
		{"t", []string{"pay", "/t/x", "--key", "0x12"}, "--key"},
		{"t", []string{"payments"}, "one key"},
	} {
		code, out, errs := claw(t, base, tc.token, tc.args...)
		require.Equal(t, exitUsage, code, "%v: %s %s", tc.args, out, errs)
		require.Contains(t, errs, tc.want, tc.args)
	}
}

func TestDeployRequestsAndInterleavedFlags(t *testing.T) {
	f, base := newFake(t, map[string]func(http.ResponseWriter, *http.Request){
		"PUT /__platform/datasets/peaks": jsonAnswer(201, `{"name":"peaks","size":10}`),
		"PUT /__platform/tenants/peaks":  jsonAnswer(201, `{"slug":"peaks","workerName":"csv:peaks","priceUsd":"0.25","x402Enabled":true}`),
	})
	big := "id,name\n" + strings.Repeat("1,Everest\n", 60000) // ~600 KB: many progress steps
	file := writeFile(t, "peaks.csv", big)
	code, out, errs := claw(t, base, "tok", "deploy", "--price", "0.25", file, "--directory", "geo", "--route", "GET /rows/* 0.5", "--route", "/ 0", "--plan", "pro")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "deployed peaks: 60000 rows, 2 columns, 0.25 USD a request (x402)")
	require.Contains(t, errs, "uploading peaks.csv:   0%")
	require.Contains(t, errs, "uploading peaks.csv: 100% (585.9 KiB of 585.9 KiB) done")
	require.Equal(t, []string{"PUT /__platform/datasets/peaks", "PUT /__platform/tenants/peaks"}, f.requests)
	require.Equal(t, []string{"Bearer tok", "Bearer tok"}, f.auth)
	require.Equal(t, big, string(f.bodies["PUT /__platform/datasets/peaks"]))
	var tn map[string]any
	require.NoError(t, json.Unmarshal(f.bodies["PUT /__platform/tenants/peaks"], &tn))
	require.Equal(t, map[string]any{
		"slug": "peaks", "workerName": "csv:peaks", "priceUsd": "0.25", "x402Enabled": true, "directory": "geo", "plan": "pro",
		"routes": []any{
			map[string]any{"method": "GET", "path": "/rows/*", "priceUsd": "0.5"},
			map[string]any{"path": "/", "priceUsd": "0"},
		},
	}, tn)
}

func TestDeployFailuresAreOneLine(t *testing.T) {
	f, base := newFake(t, map[string]func(http.ResponseWriter, *http.Request){
		"PUT /__platform/datasets/d": jsonAnswer(403, `{"ok":false,"error":"forbidden","message":"data set \"d\" belongs to another owner","requestId":"r"}`),
	})
	code, _, errs := claw(t, base, "tok", "deploy", writeFile(t, "d.csv", "a,a\n1,2\n"))
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, `column "a" appears twice`)
	require.Empty(t, f.requests, "a bad CSV was uploaded")

	code, _, errs = claw(t, base, "tok", "deploy", filepath.Join(t.TempDir(), "missing.csv"))
	require.Equal(t, exitFail, code)
	require.Equal(t, 1, strings.Count(errs, "\n"), errs)
	require.Contains(t, errs, "no such file")

	code, _, errs = claw(t, base, "tok", "deploy", writeFile(t, "d.csv", "a\n1\n"))
	require.Equal(t, exitFail, code)
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	require.Equal(t, `claw deploy: uploading `+filepath.Join(filepath.Dir(lines[len(lines)-1][len("claw deploy: uploading "):]), "d.csv")+`: 403 forbidden: data set "d" belongs to another owner`, lines[len(lines)-1])

	code, _, errs = claw(t, "http://127.0.0.1:1", "tok", "tenants")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, "cannot reach the gateway at http://127.0.0.1:1")
	require.Equal(t, 1, strings.Count(errs, "\n"))

	// An old server without the admin API.
	code, _, errs = claw(t, base, "tok", "tenants")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, "404 not_found")
	require.Contains(t, errs, "admin API mounted")
}

func TestTenantsRmPaymentsVerifyTop(t *testing.T) {
	_, base := newFake(t, map[string]func(http.ResponseWriter, *http.Request){
		"GET /__platform/tenants":           jsonAnswer(200, `{"tenants":[{"slug":"a","workerName":"csv:a","plan":"free","priceUsd":"0.001","x402Enabled":true,"ownerUserId":"u-1","directory":"data"},{"slug":"b","workerName":"w","plan":"pro","priceUsd":"0","x402Enabled":false}]}`),
		"DELETE /__platform/tenants/a":      jsonAnswer(200, `{"ok":true,"deleted":{"slug":"a","workerName":"csv:a"}}`),
		"DELETE /__platform/datasets/a":     jsonAnswer(409, `{"ok":false,"error":"conflict","message":"tenant \"z\" serves data set \"a\"","requestId":"r"}`),
		"GET /__platform/payments/auth:0x1": jsonAnswer(200, `{"ok":true,"idempotencyKey":"auth:0x1","status":"settled","amount":"0.001","transaction":"0xtx","network":"eip155:84532","tenant":"a","time":"2026-01-02T03:04:05Z"}`),
		"GET /__platform/ledger/verify":     jsonAnswer(200, `{"ok":false,"records":41,"brokenAtSeq":42,"reason":"hash does not match"}`),
		"GET /__platform/analytics":         jsonAnswer(200, `{"window":"week","hero":{"activeAgents":3,"publishedApis":2,"calls":12,"revenueUsd":"0.012"},"topApis":[{"rank":1,"apiId":"a","directory":"data","calls":12,"uniqueCallers":3,"revenueUsd":"0.012","errorRate":0.25,"p95LatencyMs":7,"score":4.5}]}`),
	})
	code, out, _ := claw(t, base, "tok", "tenants")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^SLUG\s+WORKER\s+PLAN\s+PRICE USD\s+X402\s+OWNER\s+DIRECTORY$`, out)
	require.Regexp(t, `(?m)^a\s+csv:a\s+free\s+0.001\s+true\s+u-1\s+data$`, out)
	require.Regexp(t, `(?m)^b\s+w\s+pro\s+0\s+false\s+-\s+-$`, out)
	require.Contains(t, out, "2 tenants")

	code, out, errs := claw(t, base, "tok", "rm", "a")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "removed tenant a")
	require.Contains(t, out, `kept data set a (tenant "z" serves data set "a")`)

	code, out, _ = claw(t, base, "", "payments", "auth:0x1")
	require.Equal(t, 0, code)
	require.Regexp(t, `status\s+settled`, out)
	require.Regexp(t, `transaction\s+0xtx`, out)
	require.Regexp(t, `time\s+2026-01-02T03:04:05Z`, out)
	code, _, errs = claw(t, base, "", "payments", "nope")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, `no payment with key "nope" in the ledger`)

	code, _, errs = claw(t, base, "tok", "verify")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, "audit chain BROKEN at record 42 after 41 good records: hash does not match")

	code, out, _ = claw(t, base, "", "top", "--window", "week")
	require.Equal(t, 0, code)
	require.Contains(t, out, "week: 12 calls, 0.012 USD revenue, 2 APIs, 3 agents")
	require.Regexp(t, `1\s+a\s+data\s+12\s+3\s+0.012\s+25.0%\s+7\s+4.50`, out)
}

func TestPayWithoutChallengeAndUnsignableOffers(t *testing.T) {
	_, base := newFake(t, map[string]func(http.ResponseWriter, *http.Request){
		"GET /free": jsonAnswer(200, `{"rows":[]}`),
		"GET /odd":  jsonAnswer(402, `{"x402Version":1,"error":"pay","accepts":[{"scheme":"barter","network":"moon","maxAmountRequired":"1","resource":"http://x","payTo":"0x0","asset":"0x0","maxTimeoutSeconds":60}]}`),
		"GET /gone": jsonAnswer(404, `{"ok":false,"error":"tenant_not_found"}`),
	})
	code, out, _ := claw(t, base, "", "pay", "/free")
	require.Equal(t, 0, code)
	require.Contains(t, out, "200 (no payment asked)")
	code, _, errs := claw(t, base, "", "pay", base+"/odd")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, "none of the 1 offers can be signed here")
	require.Equal(t, 1, strings.Count(errs, "\n"))
	code, _, errs = claw(t, base, "", "pay", base+"/gone")
	require.Equal(t, exitFail, code)
	require.Contains(t, errs, "answered 404")
}

func TestSlugFromFile(t *testing.T) {
	for in, want := range map[string]string{
		"data/World Cities.csv": "world-cities", "x.csv": "x", "__a__b.tsv": "a-b", "Ünï.csv": "n",
		strings.Repeat("a", 70) + ".csv": strings.Repeat("a", 63),
	} {
		require.Equal(t, want, slugFromFile(in), in)
	}
}
