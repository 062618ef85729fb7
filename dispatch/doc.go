// Package dispatch is the gateway's request pipeline.
//
// A request goes through these steps, each of which may end it:
//
//  1. Routes under /__platform/ go to Config.Platform, never to a tenant.
//  2. The tenant is resolved from the directory in force (exact host, then
//     /t/<slug>/; the prefix is stripped): 404 tenant_not_found (or
//     Config.Fallback, the platform's front), or 400 bad_request for a
//     malformed host or path (encoded slashes, backslashes, dot segments).
//  3. Its limits are resolved from its plan (limits.Policy), the dispatch
//     Payload is built (BuildDispatchPayload), and the request is priced
//     (Exchange.Price: the tenant's most specific route, or its own price).
//  4. The Stages run in order. Each is a Stage: it may answer itself or call
//     next and act on the answer. The usual stages are the metering stage
//     (quota.Limiter.Stage: rate limits and usage quota for requests that do
//     not charge) and the payment stage (x402/payment: the requests that
//     charge, metered through the same port). They decide from the public
//     Exchange, not from each other, so their order is not a contract.
//  5. The worker is called through the Fetcher with a wall-clock deadline
//     and a subrequest Budget in its context, without the request headers
//     stages consume (HeaderConsumer), names with '_', the client's
//     Forwarded, or cookies across tenants on the shared host: 404
//     worker_not_found, 503 worker_limit_exceeded, 502 tenant_worker_failure
//     (also for a worker's own 402), 504 worker_timeout, 413
//     request_too_large past Config.MaxBodyBytes. Headers stages own
//     (HeaderOwner) are removed from the worker's answer.
//  6. Lifecycle events (start, then success or failure) go to Config.Events,
//     with the typed Lifecycle; the exchange they carry has what a usage
//     event needs (metrics.UsageSink).
//
// Adding a stage does not change the pipeline: write a Stage and put it in
// Config.Stages.
//
//	logStage := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
//		resp, err := next(ctx, x)
//		log.Printf("%s %s -> %v", x.Tenant.Slug, x.Payload.Path, err)
//		return resp, err
//	})
//
// A stage that reserves something before calling next (a quota unit, a spend
// reservation) gives it back when next fails before the worker ran
// (Exchange.WorkerCalled is false).
//
// Errors the gateway makes itself are *Error values with a wire code and
// optional headers, body details and lifecycle; one table (StatusOf) maps
// codes to HTTP statuses, and ErrorResponse (WriteError for handlers)
// renders the JSON body {"ok":false,"error","message","requestId"} for
// tenant requests and platform routes alike. Every tenant response carries
// X-Request-Id and X-Tenant-Id.
//
// Limits: the subrequest limit is exact. An in-process worker gets its HTTP
// client from OutboundClient(ctx), which refuses request N+1; an HTTP
// upstream worker is told its limits in X-Dispatch-Cpu-Ms and
// X-Dispatch-Subrequests. The CPU budget cannot be metered per goroutine in
// Go, so it is enforced as a wall-clock budget (DefaultWallClock).
package dispatch
