package dispatch

import (
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// Payload is what the dispatcher knows about one request when it hands it
// to a worker: who it is for, which worker serves it, and the limits it runs
// under. Fetchers forward it (the HTTP upstream fetcher as headers, the
// Cloudflare fetcher as signed headers).
type Payload struct {
	RequestID  string        `json:"requestId"`
	TenantID   string        `json:"tenantId"`
	WorkerName string        `json:"workerName"`
	Plan       string        `json:"plan"`
	Limits     limits.Limits `json:"limits"`
	Method     string        `json:"method"`
	Host       string        `json:"host"`
	// Path is the escaped path the worker sees (/t/<slug> stripped).
	Path  string `json:"path"`
	Query string `json:"query,omitempty"`
}

// RequestInfo is the runtime-agnostic view of an incoming request that
// BuildDispatchPayload needs.
type RequestInfo struct {
	RequestID string
	Method    string
	Host      string
	Query     string
}

// BuildDispatchPayload assembles the payload for a resolved request. It is
// runtime-agnostic: a Cloudflare dispatch worker and the Go dispatcher build
// the same payload from the same inputs.
func BuildDispatchPayload(res tenant.Resolution, l limits.Limits, r RequestInfo) Payload {
	t := res.Tenant
	return Payload{
		RequestID:  r.RequestID,
		TenantID:   t.Slug,
		WorkerName: t.WorkerName,
		Plan:       t.Plan,
		Limits:     l,
		Method:     r.Method,
		Host:       r.Host,
		Path:       res.Path,
		Query:      r.Query,
	}
}
