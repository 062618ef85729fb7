package demo_test

import (
	"fmt"
	"io"
	"net/http/httptest"

	"github.com/402claw/dispatcher/examples/httpserver/demo"
)

// The demo API answers CSV to clients that ask for it.
func ExampleNewCSVAPI() {
	api := demo.NewCSVAPI()
	req := httptest.NewRequest("GET", "/rows?country=FR&min_population=500000", nil)
	req.Header.Set("Accept", "text/csv")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	fmt.Printf("%d %s\n%s", rec.Code, rec.Header().Get("X-Total-Count"), body)
	// Output:
	// 200 3
	// id,name,country,population
	// 113,Paris,FR,2160000
	// 114,Marseille,FR,870000
	// 115,Lyon,FR,520000
}
