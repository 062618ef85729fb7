package demo

import (
	"net/http"
	"strings"
)

// WorkerName is the name the demo CSV API is published under.
const WorkerName = "demo-csv"

// FreeWorkerName is the demo CSV API without its paid parts (/premium and
// /metered answer 404), for the free tenants: a worker that serves a paid
// tenant must not serve the same paid content to a free one, or the free
// tenant's path would be a way round the price.
const FreeWorkerName = "demo-csv-free"

// DemoDirectoryJSON is the example server's built-in tenant directory, in
// the registry form. The paid tenant is served by the demo worker, the free
// ones by the same API without its paid parts (FreeWorkerName):
//
//   - demo: free, plan free (50 ms CPU, 10 subrequests), reached at /t/demo/;
//   - demo-paid: x402, plan pro, with generous usage and spend limits,
//     reached at /t/demo-paid/, priced per route (DESIGN section 13): the
//     index GET / is free, the listing GET /rows costs 0.001 USD, one city
//     GET /rows/:id costs 0.003 USD, GET /metered/rows is usage-priced
//     (upto: 0.0001 USD per row returned, at most 0.01), GET /channel/rows
//     the same over a batch-settlement payment channel, and every other path (the premium
//     routes /premium/rows and /premium/rows/:id, /climate) the tenant's own
//     0.01 USD;
//   - weather: free, in the "weather" directory, so that the analytics have
//     more than one directory to show.
const DemoDirectoryJSON = `{"tenants":[
  {"slug":"demo","workerName":"demo-csv-free","plan":"free","priceUsd":"0","x402Enabled":false,
   "ownerUserId":"demo-owner","directory":"data"},
  {"slug":"demo-paid","workerName":"demo-csv","plan":"pro","priceUsd":"0.01","x402Enabled":true,
   "usageLimit":{"dailyRequests":100000,"monthlyRequests":2000000},
   "spendLimit":{"dailySpendUsd":"1000","monthlySpendUsd":"20000"},
   "ownerUserId":"demo-owner","directory":"data",
   "routes":[
    {"method":"GET","path":"/","priceUsd":"0","description":"API index: routes, parameters and formats",
     "mimeType":"application/json"},
    {"method":"GET","path":"/rows","priceUsd":"0.001","mimeType":"application/json",
     "description":"World cities: id, name, country, population; filters and paging",
     "discovery":{"queryParams":{
        "country":{"type":"string","description":"ISO 3166 country code(s), comma-separated","example":"JP"},
        "limit":{"type":"integer","description":"rows per page, 1 to 100","example":2},
        "offset":{"type":"integer","description":"rows to skip"}},
      "output":{"type":"json","example":{"rows":[{"id":1,"name":"Tokyo","country":"JP","population":13960000}]}}}},
    {"method":"GET","path":"/metered/rows","priceUsd":"0","maxPriceUsd":"0.01","schemes":["upto"],
     "mimeType":"application/json","description":"World cities priced by use: 0.0001 USD per row returned, at most 0.01"},
    {"method":"GET","path":"/channel/rows","priceUsd":"0","maxPriceUsd":"0.01","schemes":["batch-settlement"],
     "mimeType":"application/json","description":"World cities over a payment channel: deposit once, a voucher per request, 0.0001 USD per row"},
    {"method":"GET","path":"/rows/:id","priceUsd":"0.003","mimeType":"application/json",
     "description":"One world city by id",
     "discovery":{"pathParams":{"id":{"type":"string","description":"the city's id","example":"1"}}}}
   ]},
  {"slug":"weather","workerName":"demo-csv-free","plan":"free","priceUsd":"0","x402Enabled":false,
   "ownerUserId":"demo-weather","directory":"weather"}
]}`

// Workers returns the demo workers by name, for dispatch.NewHandlerFetcher.
func Workers() map[string]http.Handler {
	return map[string]http.Handler{WorkerName: NewCSVAPI(), FreeWorkerName: freeOnly(NewCSVAPI())}
}

// freeOnly serves h without its paid parts.
func freeOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.ToLower(r.URL.Path)
		for _, paid := range []string{"/premium", "/metered", "/channel"} {
			if p == paid || strings.HasPrefix(p, paid+"/") {
				http.NotFound(w, r)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
