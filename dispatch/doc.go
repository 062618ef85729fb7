// Package dispatch is the gateway's request pipeline.
//
// A request goes through these steps, each of which may end it:
//
//  1. Routes under /__platform/ go to Config.Platform, never to a tenant.
//  2. The tenant is resolved from the directory in force (exact host, then
//     /t/<slug>/; the prefix is stripped): 404 tenant_not_found, or
//     400 bad_request for a malformed host or path.
//  3. Its limits are resolved from its plan (limits.Policy) and the
//     dispatch Payload is built (BuildDispatchPayload).
//  4. The Stages run in order. Each is a Stage: it may answer itself or call
//     next and act on the answer. The usual stages, in the order the design
//     asks for, are the rate limit (quota.RateLimitStage), the payment
//     (x402's stage: challenge, verify, spend reservation, settlement after
//     the worker answered) and the usage quota (quota.UsageStage).
//  5. The worker is called through the Fetcher with a wall-clock deadline
//     and a subrequest Budget in its context: 404 worker_not_found,
//     503 worker_limit_exceeded, 502 tenant_worker_failure, 504 worker_timeout.
//  6. Lifecycle events (start, then success or failure) go to Config.Events;
//     the exchange they carry has what a usage event needs.
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
// Errors the gateway makes itself are *Error values with a wire code; one
// table (StatusOf) maps codes to HTTP statuses, and ErrorResponse renders
// the JSON body {"ok":false,"error","message","requestId"}. Every tenant
// response carries X-Request-Id and X-Tenant-Id.
//
// Limits: the subrequest limit is exact. An in-process worker gets its HTTP
// client from OutboundClient(ctx), which refuses request N+1; an HTTP
// upstream worker is told its limits in X-Dispatch-Cpu-Ms and
// X-Dispatch-Subrequests. The CPU budget cannot be metered per goroutine in
// Go, so it is enforced as a wall-clock budget (DefaultWallClock).
package dispatch
