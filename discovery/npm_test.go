package discovery

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// needTool skips when a tool is missing, except in CI, where it fails.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// richDirectory declares discovery in every shape the package supports.
const richDirectory = `{"tenants": [
 {"slug": "rich", "workerName": "w", "x402Enabled": true, "priceUsd": "0.01", "routes": [
  {"method": "GET", "path": "/forecast/:city", "mimeType": "application/json",
   "discovery": {"queryParams": {"units": {"enum": ["metric", "imperial"], "required": true},
                                 "days": {"type": "integer", "example": 7}, "raw": {"type": "boolean", "default": false}},
                 "headers": {"X-Units": "metric"}, "pathParams": {"city": {"example": "Tokyo"}},
                 "output": {"example": {"city": "Tokyo", "days": []}}}},
  {"method": "POST", "path": "/search", "discovery": {"body": {"q": "rain"},
   "bodySchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}},
  {"method": "PUT", "path": "/notes/:id", "discovery": {"bodyType": "text", "body": "hello"}},
  {"method": "PATCH", "path": "/form", "discovery": {"bodyType": "form-data", "body": {"a": "1"}}},
  {"method": "DELETE", "path": "/rows/:id", "discovery": {"pathParams": {"id": "42"}}},
  {"path": "/llm/*", "mimeType": "text/plain", "discovery": {"output": {"example": "a poem"}}},
  {"method": "HEAD", "path": "/ping", "discovery": {}}
 ]}]}`

// TestNpmExtensionsAcceptsTheCatalog checks the catalog's JSON with the
// Bazaar helpers of @x402/extensions 2.27 (testdata/node/check.mjs):
// validateDiscoveryExtension (info against schema, with ajv),
// validateDiscoveryExtensionSpec and isValidRouteTemplate.
func TestNpmExtensionsAcceptsTheCatalog(t *testing.T) {
	node := needTool(t, "node")
	dir, err := filepath.Abs(filepath.Join("testdata", "node"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@x402", "extensions")); err != nil {
		npm := needTool(t, "npm")
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("npm ci: %v\n%s", err, out)
			}
			t.Skipf("npm ci failed (registry unreachable?): %v", err)
		}
	}

	f := newFixture(t)
	js := richDirectory
	f.reg.Swap(mustDirectory(t, js))
	l := list(t, f.h, "/discovery/resources?limit=100")
	withExt := 0
	for _, it := range l.Items {
		if it.Extensions != nil {
			withExt++
		}
	}
	require.Equal(t, 7, withExt)
	// Also the weather fixture, and request-time extensions with concrete
	// path parameters and a prefix.
	f.reg.Swap(mustDirectory(t, testDirectory))
	l2 := list(t, f.h, "/discovery/resources?limit=100")
	l.Items = append(l.Items, l2.Items...)
	d := mustDirectory(t, richDirectory)
	rich, _ := d.Lookup("rich")
	for i := range rich.Routes {
		r := &rich.Routes[i]
		ext, err := BazaarExtensionWith("", r, BazaarOptions{Prefix: "/t/rich", PathParams: PathParams(r.Path, "/forecast/Osaka")})
		require.NoError(t, err)
		l.Items = append(l.Items, Item{Resource: "req:" + r.Path, Type: "http", X402Version: 2, Accepts: l2.Items[0].Accepts,
			Extensions: map[string]json.RawMessage{"bazaar": ext}})
		withExt++
	}
	withExt += 2 // the weather fixture's two declarations

	in, err := json.Marshal(l)
	require.NoError(t, err)
	cmd := exec.Command(node, "check.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var res struct {
		OK      bool     `json:"ok"`
		Checked int      `json:"checked"`
		Errors  []string `json:"errors"`
	}
	require.NoError(t, json.Unmarshal(out, &res), string(out))
	require.True(t, res.OK, "%v", res.Errors)
	require.Equal(t, withExt, res.Checked)
}
