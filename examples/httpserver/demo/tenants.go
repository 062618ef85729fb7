package demo

import "net/http"

// WorkerName is the name the demo CSV API is published under.
const WorkerName = "demo-csv"

// DemoDirectoryJSON is the example server's built-in tenant directory, in
// the registry form. All three tenants are served by the one demo worker:
//
//   - demo: free, plan free (50 ms CPU, 10 subrequests), reached at /t/demo/;
//   - demo-paid: x402 at 0.01 USD a request, plan pro, with generous usage
//     and spend limits, reached at /t/demo-paid/ (the paid route is
//     /t/demo-paid/premium/rows, though every route of a charging tenant is
//     paid);
//   - weather: free, in the "weather" directory, so that the analytics have
//     more than one directory to show.
const DemoDirectoryJSON = `{"tenants":[
  {"slug":"demo","workerName":"demo-csv","plan":"free","priceUsd":"0","x402Enabled":false,
   "ownerUserId":"demo-owner","directory":"data"},
  {"slug":"demo-paid","workerName":"demo-csv","plan":"pro","priceUsd":"0.01","x402Enabled":true,
   "usageLimit":{"dailyRequests":100000,"monthlyRequests":2000000},
   "spendLimit":{"dailySpendUsd":"1000","monthlySpendUsd":"20000"},
   "ownerUserId":"demo-owner","directory":"data"},
  {"slug":"weather","workerName":"demo-csv","plan":"free","priceUsd":"0","x402Enabled":false,
   "ownerUserId":"demo-weather","directory":"weather"}
]}`

// Workers returns the demo workers by name, for dispatch.NewHandlerFetcher.
func Workers() map[string]http.Handler {
	return map[string]http.Handler{WorkerName: NewCSVAPI()}
}
