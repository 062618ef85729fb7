package cloudflare_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

// The gateway forwards a resolved request to the dispatch worker; here a
// local server plays the dispatch worker and checks the signature.
func ExampleFetcher() {
	secret := []byte("a-shared-secret-of-32-bytes-----")
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := cloudflare.Verify(r.Header, r.Method, secret, time.Now(), cloudflare.DefaultMaxSkew)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "%s ran %s %s with %d ms CPU and %d subrequests", s.WorkerName, s.Method, s.Path, s.Limits.CPUMs, s.Limits.SubRequests)
	}))
	defer worker.Close()

	f, err := cloudflare.NewFetcher(cloudflare.FetcherConfig{URL: worker.URL, Secret: secret})
	if err != nil {
		panic(err)
	}
	p := &dispatch.Payload{
		RequestID: "6f1c1b0e-3a53-4a4e-9f8e-0d6c1f0b9a11", TenantID: "acme", WorkerName: "tenant-acme-worker",
		Plan: "pro", Limits: limits.ResolveDispatchLimits("pro", limits.Overrides{}),
		Method: "GET", Host: "gateway.example", Path: "/v1/items",
	}
	req := httptest.NewRequest("GET", "http://gateway.example/t/acme/v1/items", nil)
	resp, err := f.Fetch(context.Background(), req, p)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: tenant-acme-worker ran GET /v1/items with 200 ms CPU and 50 subrequests
}

func ExampleRenderWranglerTOML() {
	toml, err := cloudflare.RenderWranglerTOML(cloudflare.WranglerConfig{Namespace: "production", Mode: "gateway"})
	if err != nil {
		panic(err)
	}
	fmt.Print(toml[strings.Index(toml, "name ="):])
	// Output:
	// name = "dispatcher"
	// main = "dispatch.js"
	// compatibility_date = "2025-09-01"
	// workers_dev = true
	//
	// [[dispatch_namespaces]]
	// binding = "DISPATCHER"
	// namespace = "production"
	//
	// [vars]
	// DISPATCH_MODE = "gateway"
}
