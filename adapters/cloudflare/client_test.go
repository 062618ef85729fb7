package cloudflare_test

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/cloudflare"
)

// fakeAPI is a local stand-in for the Cloudflare REST API: it checks the
// bearer token, methods and paths, reads multipart uploads, and keeps the
// scripts of one dispatch namespace with their tags.
type fakeAPI struct {
	t       *testing.T
	mu      sync.Mutex
	scripts map[string]uploaded // namespace scripts by name
	account map[string]uploaded // account scripts by name
	fail    string              // answer every request with this API error
}

type uploaded struct {
	Metadata    cloudflare.Metadata
	Module      string
	ModuleType  string
	ModuleParts []string
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{t: t, scripts: map[string]uploaded{}, account: map[string]uploaded{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAPI) reply(w http.ResponseWriter, status int, result any, errs ...map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if errs == nil {
		errs = []map[string]any{}
	}
	json.NewEncoder(w).Encode(map[string]any{"success": status < 300, "errors": errs, "messages": []any{}, "result": result})
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok-123" {
		f.reply(w, 403, nil, map[string]any{"code": 10000, "message": "Authentication error"})
		return
	}
	if f.fail != "" {
		f.reply(w, 400, nil, map[string]any{"code": 10021, "message": f.fail})
		return
	}
	const prefix = "/client/v4/accounts/acct-1/workers/"
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, prefix) {
		f.reply(w, 404, nil, map[string]any{"code": 7003, "message": "No route for that URI"})
		return
	}
	rest := strings.TrimPrefix(p, prefix)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case strings.HasPrefix(rest, "dispatch/namespaces/prod/scripts/") && r.Method == http.MethodPut:
		name := strings.TrimPrefix(rest, "dispatch/namespaces/prod/scripts/")
		u := f.readUpload(r)
		f.scripts[name] = u
		f.reply(w, 200, map[string]any{"id": name, "tags": u.Metadata.Tags, "compatibility_date": u.Metadata.CompatibilityDate, "etag": "e1"})
	case rest == "dispatch/namespaces/prod/scripts" && r.Method == http.MethodGet:
		tag, ok := strings.CutSuffix(r.URL.Query().Get("tags"), ":yes")
		require.True(f.t, ok, "tags filter %q", r.URL.RawQuery)
		out := []map[string]any{}
		for name, s := range f.scripts {
			for _, tg := range s.Metadata.Tags {
				if tg == tag {
					out = append(out, map[string]any{"id": name, "tags": s.Metadata.Tags})
				}
			}
		}
		f.reply(w, 200, out)
	case rest == "dispatch/namespaces/prod/scripts" && r.Method == http.MethodDelete:
		tag, ok := strings.CutSuffix(r.URL.Query().Get("tags"), ":yes")
		require.True(f.t, ok, "tags filter %q", r.URL.RawQuery)
		for name, s := range f.scripts {
			for _, tg := range s.Metadata.Tags {
				if tg == tag {
					delete(f.scripts, name)
				}
			}
		}
		f.reply(w, 200, nil)
	case strings.HasPrefix(rest, "dispatch/namespaces/prod/scripts/") && r.Method == http.MethodDelete:
		name := strings.TrimPrefix(rest, "dispatch/namespaces/prod/scripts/")
		if _, ok := f.scripts[name]; !ok {
			f.reply(w, 404, nil, map[string]any{"code": 10007, "message": "This Worker does not exist on your account."})
			return
		}
		delete(f.scripts, name)
		w.WriteHeader(200) // no body, as the API documents for deletes
	case strings.HasPrefix(rest, "scripts/") && r.Method == http.MethodPut:
		name := strings.TrimPrefix(rest, "scripts/")
		f.account[name] = f.readUpload(r)
		f.reply(w, 200, map[string]any{"id": name})
	default:
		f.reply(w, 405, nil, map[string]any{"code": 10405, "message": "method not allowed: " + r.Method + " " + rest})
	}
}

// readUpload checks the multipart shape Cloudflare requires: a metadata
// JSON part and a module part named after main_module.
func (f *fakeAPI) readUpload(r *http.Request) uploaded {
	t := f.t
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/form-data", mt)
	mr := multipart.NewReader(r.Body, params["boundary"])
	var u uploaded
	parts := map[string]string{}
	types := map[string]string{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(part)
		require.NoError(t, err)
		parts[part.FormName()] = string(b)
		types[part.FormName()] = part.Header.Get("Content-Type")
		u.ModuleParts = append(u.ModuleParts, part.FormName())
	}
	require.Contains(t, parts, "metadata")
	require.Equal(t, "application/json", types["metadata"])
	dec := json.NewDecoder(strings.NewReader(parts["metadata"]))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&u.Metadata))
	require.NotEmpty(t, u.Metadata.MainModule)
	require.Contains(t, parts, u.Metadata.MainModule, "the module part is named after main_module")
	u.Module = parts[u.Metadata.MainModule]
	u.ModuleType = types[u.Metadata.MainModule]
	require.Equal(t, "application/javascript+module", u.ModuleType)
	return u
}

func newClient(t *testing.T, srv *httptest.Server, token string) *cloudflare.Client {
	t.Helper()
	c, err := cloudflare.NewClient(cloudflare.Config{AccountID: "acct-1", APIToken: token, BaseURL: srv.URL + "/client/v4/", HTTPClient: srv.Client()})
	require.NoError(t, err)
	return c
}

func TestClientUploadListDeleteByTag(t *testing.T) {
	t.Parallel()
	api, srv := newFakeAPI(t)
	c := newClient(t, srv, "tok-123")
	ctx := context.Background()
	module := []byte("export default { fetch() { return new Response('hi') } }")
	for _, name := range []string{"tenant-acme-worker", "tenant-bob-worker"} {
		s, err := c.UploadUserWorker(ctx, cloudflare.UserWorker{
			Namespace: "prod", ScriptName: name, Module: module,
			Bindings: []cloudflare.Binding{cloudflare.PlainText("PLAN", "pro")},
			Tags:     []string{"402claw", "tenant-" + strings.Split(name, "-")[1]},
		})
		require.NoError(t, err)
		require.Equal(t, name, s.ID)
		require.Equal(t, cloudflare.DefaultCompatibilityDate, s.CompatibilityDate)
	}
	up := api.scripts["tenant-acme-worker"]
	require.Equal(t, "worker.js", up.Metadata.MainModule)
	require.Equal(t, string(module), up.Module)
	require.Equal(t, []string{"metadata", "worker.js"}, up.ModuleParts)
	require.Equal(t, []cloudflare.Binding{{Type: "plain_text", Name: "PLAN", Text: "pro"}}, up.Metadata.Bindings)

	list, err := c.ListScriptsByTag(ctx, "prod", "402claw")
	require.NoError(t, err)
	require.Len(t, list, 2)
	list, err = c.ListScriptsByTag(ctx, "prod", "tenant-bob")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "tenant-bob-worker", list[0].ID)

	require.NoError(t, c.DeleteScriptsByTag(ctx, "prod", "tenant-bob"))
	list, err = c.ListScriptsByTag(ctx, "prod", "402claw")
	require.NoError(t, err)
	require.Len(t, list, 1)

	require.NoError(t, c.DeleteUserWorker(ctx, "prod", "tenant-acme-worker"))
	err = c.DeleteUserWorker(ctx, "prod", "tenant-acme-worker")
	var apiErr *cloudflare.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 404, apiErr.Status)
	require.True(t, apiErr.HasCode(10007))
	require.Contains(t, err.Error(), "This Worker does not exist on your account. (code 10007)")
}

func TestClientUploadDispatchWorker(t *testing.T) {
	t.Parallel()
	api, srv := newFakeAPI(t)
	c := newClient(t, srv, "tok-123")
	_, err := c.UploadDispatchWorker(context.Background(), cloudflare.DispatchWorker{
		ScriptName: "dispatcher", Namespace: "prod", DirectoryJSON: `{"tenants":[]}`, Secret: "s3cr3t", Mode: "both",
	})
	require.NoError(t, err)
	up := api.account["dispatcher"]
	require.Equal(t, cloudflare.DispatchWorkerModuleName, up.Metadata.MainModule)
	require.Equal(t, string(cloudflare.DispatchWorkerScript()), up.Module)
	require.Equal(t, []cloudflare.Binding{
		{Type: "dispatch_namespace", Name: "DISPATCHER", Namespace: "prod"},
		{Type: "plain_text", Name: "TENANT_DIRECTORY_JSON", Text: `{"tenants":[]}`},
		{Type: "secret_text", Name: "DISPATCH_SECRET", Text: "s3cr3t"},
		{Type: "plain_text", Name: "DISPATCH_MODE", Text: "both"},
	}, up.Metadata.Bindings)
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	api, srv := newFakeAPI(t)
	ctx := context.Background()

	_, err := newClient(t, srv, "wrong").ListScriptsByTag(ctx, "prod", "x")
	var apiErr *cloudflare.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 403, apiErr.Status)
	require.Equal(t, "cloudflare API GET /accounts/acct-1/workers/dispatch/namespaces/prod/scripts?tags=x%3Ayes: HTTP 403: Authentication error (code 10000)", err.Error())

	api.fail = "Uncaught SyntaxError: Unexpected token"
	_, err = newClient(t, srv, "tok-123").UploadUserWorker(ctx, cloudflare.UserWorker{Namespace: "prod", ScriptName: "w", Module: []byte("x")})
	require.ErrorAs(t, err, &apiErr)
	require.True(t, apiErr.HasCode(10021))
	require.Contains(t, err.Error(), "Uncaught SyntaxError")

	// Not an envelope at all.
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad gateway", 502) }))
	defer bare.Close()
	_, err = newClient(t, bare, "tok-123").ListScriptsByTag(ctx, "prod", "x")
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 502, apiErr.Status)
	require.Contains(t, err.Error(), "unreadable answer: bad gateway")

	c := newClient(t, srv, "tok-123")
	_, err = c.UploadUserWorker(ctx, cloudflare.UserWorker{Namespace: "prod", ScriptName: "w", Module: []byte("x"), Tags: strings.Split("a,b,c,d,e,f,g,h,i", ",")})
	require.ErrorContains(t, err, "at most 8")
	_, err = c.UploadUserWorker(ctx, cloudflare.UserWorker{Namespace: "prod", ScriptName: "w", Module: []byte("x"), Tags: []string{"a&b"}})
	require.Error(t, err)
	_, err = c.UploadUserWorker(ctx, cloudflare.UserWorker{Namespace: "prod", ScriptName: "w"})
	require.ErrorContains(t, err, "module is empty")

	for _, cfg := range []cloudflare.Config{{APIToken: "t"}, {AccountID: "a"}, {AccountID: "a", APIToken: "t", BaseURL: "not a url"}} {
		_, err := cloudflare.NewClient(cfg)
		require.Error(t, err)
	}
}

func TestWranglerExampleIsCurrent(t *testing.T) {
	t.Parallel()
	got, err := cloudflare.RenderWranglerTOML(exampleWrangler)
	require.NoError(t, err)
	want, err := os.ReadFile("wrangler.example.toml")
	if *update {
		require.NoError(t, os.WriteFile("wrangler.example.toml", []byte(got), 0o644))
		return
	}
	require.NoError(t, err)
	require.Equal(t, string(want), got, "run go test ./adapters/cloudflare -run TestWranglerExampleIsCurrent -update")

	_, err = cloudflare.RenderWranglerTOML(cloudflare.WranglerConfig{})
	require.Error(t, err)
	_, err = cloudflare.RenderWranglerTOML(cloudflare.WranglerConfig{Namespace: "p", Mode: "fast"})
	require.Error(t, err)
	s, err := cloudflare.RenderWranglerTOML(cloudflare.WranglerConfig{Namespace: "p", Routes: []string{"a.example/*"}})
	require.NoError(t, err)
	require.Contains(t, s, `routes = ["a.example/*"]`)
	require.NotContains(t, s, "workers_dev")
}

var exampleWrangler = cloudflare.WranglerConfig{
	Name:          "dispatcher",
	Main:          "worker/dispatch.js",
	Namespace:     "production",
	Mode:          "both",
	Routes:        []string{"*.api.402claw.dev/*", "api.402claw.dev/t/*"},
	ZoneName:      "402claw.dev",
	DirectoryJSON: `{"tenants":[{"slug":"acme","workerName":"tenant-acme-worker","plan":"pro","hosts":["acme.api.402claw.dev"]}]}`,
}
