// Package cloudflare runs the dispatcher's tenants on Cloudflare Workers for
// Platforms.
//
// It has four parts:
//
//   - The dispatch worker ([DispatchWorkerScript], worker/dispatch.js): one
//     JavaScript module, no imports, for an account whose dispatch namespace
//     is bound as DISPATCHER. In edge mode it reads the tenant directory from
//     TENANT_DIRECTORY_JSON and resolves tenants and limits exactly as the
//     tenant and limits packages do (testdata/cases.json is run by the Go and
//     the JavaScript tests alike). In gateway mode the Go gateway resolves
//     and charges, and the worker only honours requests signed with the
//     shared DISPATCH_SECRET.
//   - [Fetcher], a dispatch.Fetcher for gateway mode: it forwards a request
//     to the dispatch worker's URL with the worker name, limits, request id
//     and a timestamp in headers signed with HMAC-SHA256 ([Sign]), and maps
//     the dispatch worker's error answers back to the dispatch sentinels.
//   - [Client], a small client of the Cloudflare REST API: upload a tenant
//     worker to a dispatch namespace, list and delete scripts by tag, upload
//     the dispatch worker with its bindings.
//   - [RenderWranglerTOML], which writes the wrangler.toml of the dispatch
//     worker (wrangler.example.toml is one, committed).
//
// Errors the dispatch worker answers itself are the gateway's JSON error
// body, {"ok":false,"error":code,"message":text,"requestId":id}, with
// X-Request-Id, X-Tenant-Id when the tenant is known, and an extra
// X-Dispatch-Error header carrying the code, so that a tenant worker's own
// 404 is never mistaken for worker_not_found:
//
//	"Worker not found" from the namespace   404 worker_not_found
//	CPU or subrequest limit exceeded         503 worker_limit_exceeded
//	any other exception                      502 tenant_worker_failure
//	no tenant for the host or /t/<slug>/     404 tenant_not_found
//	bad slug, dot segments, bad Host         400 bad_request
//	unsigned, altered or stale (gateway)     401 unauthorized
//	invalid TENANT_DIRECTORY_JSON (edge)     500 invalid_directory
//
// CPU time is enforced by Cloudflare itself (the binding's limits option),
// so the Fetcher adds no CPU budget of its own; the dispatcher's wall-clock
// budget still bounds the whole call, and a call that runs out of it is
// worker_timeout.
package cloudflare
