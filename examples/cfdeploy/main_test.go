package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

// fakeCloudflare records the scripts uploaded to dispatch namespaces.
type fakeCloudflare struct {
	mu      sync.Mutex
	scripts map[string]string // namespace/script -> module source
	tags    map[string][]string
}

func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	const prefix = "/client/v4/accounts/acct-1/workers/dispatch/namespaces/"
	if r.Header.Get("Authorization") != "Bearer tok" {
		w.WriteHeader(403)
		io.WriteString(w, `{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}`)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	parts := strings.Split(rest, "/")
	if !ok || r.Method != http.MethodPut || len(parts) != 3 || parts[1] != "scripts" {
		w.WriteHeader(404)
		io.WriteString(w, `{"success":false,"errors":[{"code":7003,"message":"No route for that URI"}],"messages":[],"result":null}`)
		return
	}
	_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	mr := multipart.NewReader(r.Body, params["boundary"])
	var md cloudflare.Metadata
	modules := map[string]string{}
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(p)
		if p.FormName() == "metadata" {
			json.Unmarshal(b, &md)
		} else {
			modules[p.FormName()] = string(b)
		}
	}
	f.mu.Lock()
	key := parts[0] + "/" + parts[2]
	f.scripts[key] = modules[md.MainModule]
	f.tags[key] = md.Tags
	f.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": map[string]any{"id": parts[2], "etag": "e"}})
}

func (f *fakeCloudflare) has(namespace, script string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.scripts[namespace+"/"+script]
	return ok
}

// TestDeployToDispatch goes from cfdeploy's upload and directory file to a
// dispatch.Dispatcher that routes requests, through cloudflare.Fetcher and a
// Go stand-in for the dispatch worker, to the deployed workers with their
// plan limits.
func TestDeployToDispatch(t *testing.T) {
	cf := &fakeCloudflare{scripts: map[string]string{}, tags: map[string][]string{}}
	api := httptest.NewServer(cf)
	defer api.Close()

	dir := t.TempDir()
	script := filepath.Join(dir, "worker.js")
	require.NoError(t, os.WriteFile(script, []byte("export default { fetch() { return new Response('hi') } }"), 0o644))
	out := filepath.Join(dir, "tenants.json")
	env := map[string]string{"CLOUDFLARE_ACCOUNT_ID": "acct-1", "CLOUDFLARE_API_TOKEN": "tok"}
	deploy := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		base := []string{"-script", script, "-api-url", api.URL + "/client/v4", "-out", out, "-namespace", "prod"}
		require.NoError(t, run(context.Background(), append(base, args...), func(k string) string { return env[k] }, &stdout, &stderr), stderr.String())
		return stdout.String()
	}
	deploy("-slug", "acme", "-plan", "PRO", "-host", "acme.api.402claw.dev", "-price", "0.01")
	deploy("-slug", "bob", "-plan", "business", "-cpu-ms", "120")
	msg := deploy("-slug", "bob", "-plan", "business", "-cpu-ms", "100") // redeploy replaces
	require.Contains(t, msg, `tenant "bob" -> worker "tenant-bob-worker", plan business (cpuMs 100, subRequests 100)`)
	require.True(t, cf.has("prod", "tenant-acme-worker"))
	require.Equal(t, []string{"402claw", "tenant-acme", "plan-pro"}, cf.tags["prod/tenant-acme-worker"])

	// A tenant whose worker was never uploaded.
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	var file map[string][]map[string]any
	require.NoError(t, json.Unmarshal(raw, &file))
	require.Len(t, file["tenants"], 2)
	file["tenants"] = append(file["tenants"], map[string]any{"slug": "ghost", "workerName": "tenant-ghost-worker", "plan": "free"})
	raw, err = json.Marshal(file)
	require.NoError(t, err)

	d, err := tenant.ParseDirectory(raw)
	require.NoError(t, err)
	acme, ok := d.Lookup("acme")
	require.True(t, ok)
	require.Equal(t, "0.01", acme.PriceUSD.String())
	require.True(t, acme.X402Enabled)

	// The dispatch worker in gateway mode, in Go: it checks the signature
	// and "runs" the scripts the fake API holds.
	secret := []byte("e2e-shared-secret-0123456789")
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := cloudflare.Verify(r.Header, r.Method, secret, time.Now(), 0)
		if err != nil {
			w.Header().Set(cloudflare.HeaderError, "unauthorized")
			w.WriteHeader(401)
			return
		}
		if !cf.has("prod", s.WorkerName) {
			w.Header().Set(cloudflare.HeaderError, "worker_not_found")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(dispatch.ErrorBody{Error: "worker_not_found", Message: "Worker not found.", RequestID: s.RequestID})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"worker": s.WorkerName, "cpuMs": s.Limits.CPUMs, "subRequests": s.Limits.SubRequests, "path": s.Path, "tenant": s.TenantID})
	}))
	defer edge.Close()

	fetcher, err := cloudflare.NewFetcher(cloudflare.FetcherConfig{URL: edge.URL, Secret: secret})
	require.NoError(t, err)
	dsp, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(d), Fetcher: fetcher})
	require.NoError(t, err)

	get := func(host, path string) (*http.Response, map[string]any) {
		req := httptest.NewRequest("GET", "http://"+host+path, nil)
		rec := httptest.NewRecorder()
		dsp.ServeHTTP(rec, req)
		var body map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
		return rec.Result(), body
	}

	resp, body := get("gateway.example", "/t/acme/v1/items?q=1")
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, map[string]any{"worker": "tenant-acme-worker", "cpuMs": 200.0, "subRequests": 50.0, "path": "/v1/items?q=1", "tenant": "acme"}, body)
	require.Equal(t, "acme", resp.Header.Get("X-Tenant-Id"))

	resp, body = get("ACME.api.402claw.dev:443", "/hello")
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, "tenant-acme-worker", body["worker"])
	require.Equal(t, "/hello", body["path"])

	resp, body = get("gateway.example", "/t/bob/")
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, map[string]any{"worker": "tenant-bob-worker", "cpuMs": 100.0, "subRequests": 100.0, "path": "/", "tenant": "bob"}, body)

	resp, body = get("gateway.example", "/t/ghost/x")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "worker_not_found", body["error"])
	require.Equal(t, resp.Header.Get("X-Request-Id"), body["requestId"])

	resp, body = get("gateway.example", "/t/nobody/x")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "tenant_not_found", body["error"])
}

func TestDryRunAndValidation(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "w.js")
	require.NoError(t, os.WriteFile(script, []byte("export default {}"), 0o644))
	out := filepath.Join(dir, "t.json")
	noenv := func(string) string { return "" }
	var stdout, stderr bytes.Buffer

	require.NoError(t, run(context.Background(), []string{"-script", script, "-slug", "demo", "-dry-run", "-out", out}, noenv, &stdout, &stderr))
	require.Contains(t, stdout.String(), "dry run: would upload")
	d, err := os.ReadFile(out)
	require.NoError(t, err)
	dd, err := tenant.ParseDirectory(d)
	require.NoError(t, err)
	require.Equal(t, 1, dd.Len())

	// A dry run uploads to a loopback API only.
	err = run(context.Background(), []string{"-script", script, "-slug", "demo", "-dry-run", "-api-url", "https://api.cloudflare.com/client/v4", "-out", out}, noenv, &stdout, &stderr)
	require.ErrorContains(t, err, "loopback")

	for _, args := range [][]string{
		{"-slug", "demo"},
		{"-script", script, "-slug", "Bad_Slug"},
		{"-script", script, "-slug", "demo", "-price", "-1", "-dry-run"},
		{"-script", script, "-slug", "demo", "-host", "bad host", "-dry-run"},
		{"-script", script, "-slug", "demo"}, // no credentials
	} {
		require.Error(t, run(context.Background(), append(args, "-out", filepath.Join(dir, "x.json")), noenv, &stdout, &stderr), "%v", args)
	}
	_, err = os.Stat(filepath.Join(dir, "x.json"))
	require.ErrorIs(t, err, os.ErrNotExist, "failed deploys write no directory")
}
