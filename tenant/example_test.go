package tenant_test

import (
	"errors"
	"fmt"

	"github.com/402claw/dispatcher/tenant"
)

func ExampleParseDirectory() {
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[
	  {"slug":"acme","workerName":"tenant-acme-worker","plan":"PRO","hosts":["acme.api.402claw.dev"],"priceUsd":"0.01","x402Enabled":true}
	]}`))
	if err != nil {
		panic(err)
	}
	byHost, _ := dir.Resolve("ACME.api.402claw.dev:443", "/v1/quote")
	byPath, _ := dir.Resolve("gateway.local", "/t/acme/v1/quote")
	fmt.Println(byHost.Tenant.Slug, byHost.Path, byHost.Tenant.Plan, byHost.Tenant.Charges())
	fmt.Println(byPath.Tenant.Slug, byPath.Path)

	_, err = tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"acme","workerName":"w","priceUsd":"0.0000001"}]}`))
	var ve *tenant.ValidationError
	fmt.Println(errors.As(err, &ve), ve.Tenant, ve.Field)
	// Output:
	// acme /v1/quote pro true
	// acme /v1/quote
	// true acme priceUsd
}

func ExampleRegistry_Replace() {
	reg := tenant.NewRegistry(nil)
	if _, err := reg.Replace([]byte(`{"tenants":[{"slug":"a","workerName":"w"}]}`)); err != nil {
		panic(err)
	}
	// A bad directory is refused whole; the one in force stays.
	_, err := reg.Replace([]byte(`{"tenants":[{"slug":"b"}]}`))
	fmt.Println(err)
	fmt.Println(reg.Load().Len())
	// Output:
	// tenant directory: tenant "b": field "workerName": is required
	// 1
}

func ExampleTenant_PriceFor() {
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[
	  {"slug":"weather","workerName":"w-weather","x402Enabled":true,"priceUsd":"0.01","routes":[
	    {"method":"GET","path":"/forecast/:city","priceUsd":"0.002","description":"7-day forecast"},
	    {"path":"/llm/*","schemes":["upto"],"maxPriceUsd":"0.50"},
	    {"method":"GET","path":"/health","priceUsd":"0"}]}
	]}`))
	if err != nil {
		panic(err)
	}
	res, _ := dir.Resolve("gateway.local", "/t/weather/forecast/Tokyo")
	for _, r := range []struct{ method, path string }{
		{"GET", res.Path},
		{"POST", "/llm/v1/chat"},
		{"GET", "/health"},
		{"GET", "/other"},
	} {
		p := res.Tenant.PriceFor(r.method, r.path)
		fmt.Printf("%s %s: pattern=%q price=%s max=%s schemes=%v charges=%t\n",
			r.method, r.path, p.Pattern, p.PriceUSD, p.MaxPriceUSD, p.Schemes, p.Charges)
	}
	// Output:
	// GET /forecast/Tokyo: pattern="/forecast/:city" price=0.002 max=0.002 schemes=[exact] charges=true
	// POST /llm/v1/chat: pattern="/llm/*" price=0.01 max=0.5 schemes=[upto] charges=true
	// GET /health: pattern="/health" price=0 max=0 schemes=[exact] charges=false
	// GET /other: pattern="" price=0.01 max=0.01 schemes=[exact] charges=true
}
