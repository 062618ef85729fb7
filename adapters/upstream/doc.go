// Package upstream is a dispatch.Fetcher that forwards tenant requests to
// workers running as HTTP services.
//
// Each worker name maps to a base URL. A request for worker w with the
// worker path /rows?country=FR goes to <base of w>/rows?country=FR: the base
// URL's path is joined with the forwarded path and the query is kept (a
// query on the base URL comes first).
//
// # Headers
//
// Hop-by-hop headers (Connection and every header it lists, Keep-Alive,
// Proxy-Authenticate, Proxy-Authorization, Proxy-Connection and any other
// Proxy-* header, TE, Trailer, Transfer-Encoding, Upgrade) are removed from
// the request and from the response. Protocol upgrades (WebSocket) are
// therefore not forwarded.
//
// The worker is told who asked and under which limits:
//
//	X-Forwarded-For         the incoming value, if any, with the client IP appended
//	X-Forwarded-Host        the Host the client asked for
//	X-Forwarded-Proto       "https" when the client connection was TLS, else "http"
//	X-Request-Id            the dispatcher's request id
//	X-Tenant-Id             the tenant's slug
//	X-Dispatch-Cpu-Ms       the CPU budget of the request, in milliseconds
//	X-Dispatch-Subrequests  how many outbound requests the worker may make
//
// Headers a client sends under the X-Dispatch- prefix are dropped, so a
// client cannot claim bigger limits. X-Forwarded-Host and X-Forwarded-Proto
// are overwritten unless Config.TrustForwarded is set (the gateway sits
// behind a proxy that sets them). The Host header of the outgoing request is
// the worker's host unless Config.PreserveHost is set.
//
// # Limits
//
// Go cannot meter a remote worker's CPU, so the limits are advisory to the
// worker: it reads the two X-Dispatch- headers and enforces them itself. The
// dispatcher enforces the wall-clock budget through the request context. A
// worker that breaches its own limits reports it by answering
//
//	503 Service Unavailable
//	X-Dispatch-Limit-Exceeded: 1
//
// which the fetcher turns into dispatch.ErrWorkerLimitExceeded (the gateway
// answers 503 worker_limit_exceeded). Any other 503 is the worker's own
// answer and is passed through.
//
// # Errors
//
//	unknown worker name (and no Config.Fallback)           dispatch.ErrWorkerNotFound     404
//	connection refused or reset, DNS failure, dial timeout dispatch.ErrWorkerFailure      502
//	context deadline, response header timeout              dispatch.ErrWorkerTimeout      504
//	503 with X-Dispatch-Limit-Exceeded: 1                  dispatch.ErrWorkerLimitExceeded 503
//
// # Streaming and connections
//
// Request and response bodies are streamed, never buffered: the request body
// is read by the transport as it writes to the worker, and the response body
// is handed to the dispatcher, which copies it to the client. All workers
// share one transport (NewTransport when Config.Transport is nil) tuned for a
// gateway: large idle pools per host, bounded dial, TLS and response-header
// timeouts, and no transparent compression (the worker's Content-Encoding
// passes through untouched).
package upstream
