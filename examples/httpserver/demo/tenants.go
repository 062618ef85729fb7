package demo

import "net/http"

// WorkerName is the name the demo CSV API is published under.
const WorkerName = "demo-csv"

// DemoDirectoryJSON is the example server's built-in tenant directory, in
// the registry form. All three tenants are served by the one demo worker:
//
//   - demo: free, plan free (50 ms CPU, 10 subrequests), reached at /t/demo/;
//   - demo-paid: x402, plan pro, with generous usage and spend limits,
//     reached at /t/demo-paid/, priced per route (DESIGN section 13): the
//     index GET / is free, the listing GET /rows costs 0.001 USD, one city
//     GET /rows/:id costs 0.003 USD, GET /metered/rows is usage-priced
//     (upto: 0.0001 USD per row returned, at most 0.01), and every other path (the premium
//     routes /premium/rows and /premium/rows/:id, /climate) the tenant's own
//     0.01 USD;
//   - weather: free, in the "weather" directory, so that the analytics have
//     more than one directory to show.
const DemoDirectoryJSON = `{"tenants":[
  {"slug":"demo","workerName":"demo-csv","plan":"free","priceUsd":"0","x402Enabled":false,
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
    {"method":"GET","path":"/rows/:id","priceUsd":"0.003","mimeType":"application/json",
     "description":"One world city by id",
     "discovery":{"pathParams":{"id":{"type":"string","description":"the city's id","example":"1"}}}}
   ]},
  {"slug":"weather","workerName":"demo-csv","plan":"free","priceUsd":"0","x402Enabled":false,
   "ownerUserId":"demo-weather","directory":"weather"}
]}`

// Workers returns the demo workers by name, for dispatch.NewHandlerFetcher.
func Workers() map[string]http.Handler {
	return map[string]http.Handler{WorkerName: NewCSVAPI()}
}
