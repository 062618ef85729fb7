// Package demo is the example server's demo worker: a small read-only CSV
// API over an embedded data set of world cities, and the tenant directory
// that publishes it.
//
// The data set (data/cities.csv) is made up for demonstrations: the cities
// are real but the figures are rounded approximations, not statistics to
// rely on.
//
// Routes of NewCSVAPI:
//
//	GET /                   index of the routes
//	GET /rows               cities: id, name, country, population
//	GET /rows/{id}          one city, the same columns
//	GET /premium/rows       cities with every column, plus statistics over the match
//	GET /premium/rows/{id}  one city, every column
//	GET /climate?city=NAME  made-up climate figures for a city (a target for enrichment)
//
// The list routes take these query parameters:
//
//	country=FR,DE        ISO 3166 alpha-2 codes, any case, comma separated
//	min_population=N     at least N inhabitants
//	q=TEXT               case-insensitive substring of the city name
//	limit=N              page size, 1 to 100 (default 20)
//	offset=N             rows to skip (default 0)
//	format=csv|json      overrides the Accept header
//	enrich=1             attach data fetched from the enrichment URL (WithEnrichURL)
//
// A client that prefers text/csv in its Accept header (or asks format=csv)
// gets CSV with a header row and the match count in X-Total-Count; every
// other client gets JSON {"rows":[...],"total":N,"limit":L,"offset":O}.
// A bad parameter is a 400 JSON error naming it, an unknown id a 404.
//
// # Subrequests
//
// enrich=1 shows the subrequest budget: the worker makes one outbound
// request per returned row, through dispatch.OutboundClient. In process
// (dispatch.HandlerFetcher) the budget comes from the request context; over
// HTTP (adapters/upstream) the worker builds it from the
// X-Dispatch-Subrequests header. Either way a page of 20 rows on the free
// plan (10 subrequests) goes over the limit: the worker answers 503 with
// X-Dispatch-Limit-Exceeded: 1 and the gateway 503 worker_limit_exceeded.
//
// # Tenants
//
// DemoDirectoryJSON publishes the worker as three tenants: "demo" (free),
// "demo-paid" (x402, priced per route: a free index, 0.001 USD for /rows,
// 0.003 for /rows/:id, /metered/rows by use, 0.01 for the rest, where
// /premium/rows belongs) and "weather" (free, a second API in another
// marketplace directory, for analytics).
package demo
