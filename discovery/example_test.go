package discovery_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"

	"github.com/402claw/dispatcher/discovery"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// exactOffers offers the exact scheme on Base Sepolia for every endpoint.
type exactOffers struct{}

func (exactOffers) Accepts(t *tenant.Tenant, p tenant.Priced, resourceURL string) ([]x402.Requirement, error) {
	r, err := x402.NewRequirement(x402.RequirementParams{
		Price: p.PriceUSD, PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: resourceURL, Description: p.Description, MimeType: p.MimeType,
	})
	return []x402.Requirement{r}, err
}

func ExampleBazaarExtension() {
	r := &tenant.Route{Method: "GET", Path: "/forecast/:city", MimeType: "application/json",
		Discovery: json.RawMessage(`{"queryParams": {"units": {"enum": ["metric", "imperial"]}},
		  "output": {"example": {"city": "Tokyo"}}}`)}
	ext, err := discovery.BazaarExtensionWith("GET", r, discovery.BazaarOptions{
		Prefix: "/t/weather", PathParams: discovery.PathParams(r.Path, "/forecast/Tokyo"),
	})
	if err != nil {
		panic(err)
	}
	var x struct {
		Info          json.RawMessage `json:"info"`
		RouteTemplate string          `json:"routeTemplate"`
	}
	_ = json.Unmarshal(ext, &x)
	fmt.Println(string(x.Info))
	fmt.Println(x.RouteTemplate)
	// Output:
	// {"input":{"type":"http","method":"GET","queryParams":{"units":"metric"},"pathParams":{"city":"Tokyo"}},"output":{"type":"json","example":{"city":"Tokyo"}}}
	// /t/weather/forecast/:city
}

func ExampleNewHandler() {
	dir, _ := tenant.ParseDirectory([]byte(`{"tenants": [{"slug": "weather", "workerName": "w",
	  "x402Enabled": true, "priceUsd": "0.01", "directory": "data",
	  "routes": [{"method": "GET", "path": "/forecast/:city", "priceUsd": "0.002"}]}]}`))
	h, err := discovery.NewHandler(discovery.Config{
		Registry: tenant.NewRegistry(dir), Offers: exactOffers{}, BaseURL: "https://api.example.com",
	})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/discovery/resources?network=eip155:84532&limit=10", nil))
	var l discovery.ListResponse
	_ = json.Unmarshal(rec.Body.Bytes(), &l)
	for _, it := range l.Items {
		fmt.Println(it.Resource, it.Accepts[0].Amount, it.Metadata.Category)
	}
	fmt.Printf("%+v\n", l.Pagination)
	// Output:
	// https://api.example.com/t/weather/forecast/:city 2000 data
	// https://api.example.com/t/weather/ 10000 data
	// {Limit:10 Offset:0 Total:2}
}
