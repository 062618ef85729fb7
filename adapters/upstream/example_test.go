package upstream_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

// A dispatcher in front of a worker that runs as an HTTP service.
func Example() {
	// The tenant's worker: any HTTP server. It is told its limits in
	// headers.
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s for %s, cpu %s ms, %s subrequests\n", r.URL.RequestURI(),
			r.Header.Get("X-Tenant-Id"), r.Header.Get("X-Dispatch-Cpu-Ms"), r.Header.Get("X-Dispatch-Subrequests"))
	}))
	defer worker.Close()

	fetcher, err := upstream.New(upstream.Config{
		Workers: map[string]string{"weather-worker": worker.URL + "/api"},
	})
	if err != nil {
		panic(err)
	}
	defer fetcher.CloseIdleConnections()

	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"weather","workerName":"weather-worker","plan":"pro"}]}`))
	if err != nil {
		panic(err)
	}
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: fetcher})
	if err != nil {
		panic(err)
	}
	gateway := httptest.NewServer(d)
	defer gateway.Close()

	for _, path := range []string{"/t/weather/today?city=Lyon", "/t/nobody/"} {
		resp, err := http.Get(gateway.URL + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e dispatch.ErrorBody
			_ = json.Unmarshal(body, &e)
			body = []byte(e.Error + "\n")
		}
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	// Output:
	// 200 /api/today?city=Lyon for weather, cpu 200 ms, 50 subrequests
	// 404 tenant_not_found
}
