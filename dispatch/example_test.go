package dispatch_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

func ExampleNewDispatcher() {
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"hello","workerName":"hello-worker","plan":"pro"}]}`))
	if err != nil {
		panic(err)
	}
	workers := dispatch.NewHandlerFetcher(map[string]http.Handler{
		"hello-worker": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", r.URL.Path)
		}),
	})
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: workers})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest("GET", "http://gateway.local/t/hello/greet", nil))
	body, _ := io.ReadAll(rec.Body)
	fmt.Println(rec.Code, rec.Header().Get("X-Tenant-Id"), string(body))

	rec = httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest("GET", "http://gateway.local/t/nobody/", nil))
	fmt.Println(rec.Code)
	// Output:
	// 200 hello hello from /greet
	// 404
}
