package main

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// workerFaults are the fractions (0..1) of requests to the flaky worker that
// misbehave, and how slow "slow" is.
type workerFaults struct {
	Slow      float64       // answer after a random delay up to SlowDelay
	SlowDelay time.Duration // upper bound of the delay
	Fail      float64       // answer 500
	Reset     float64       // hijack the connection and close it (no answer)
}

// upstream is the tenant worker the gateway forwards to over HTTP. Its
// base URLs end in /healthy (never misbehaves) or /flaky (faults at the
// configured fractions); the generated tenants' workers map to one or the
// other (tenants.go).
type upstream struct {
	faults workerFaults
	n      atomic.Int64
	slow   atomic.Int64
	fail   atomic.Int64
	reset  atomic.Int64
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := u.n.Add(1)
	if strings.HasPrefix(r.URL.Path, "/flaky") {
		f := u.faults
		x := rand.Float64()
		switch {
		case x < f.Fail:
			u.fail.Add(1)
			http.Error(w, "injected worker failure", http.StatusInternalServerError)
			return
		case x < f.Fail+f.Reset:
			u.reset.Add(1)
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					if tc, ok := c.(*net.TCPConn); ok {
						_ = tc.SetLinger(0) // a RST rather than a FIN
					}
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case x < f.Fail+f.Reset+f.Slow && f.SlowDelay > 0:
			u.slow.Add(1)
			d := time.Duration(rand.Int64N(int64(f.SlowDelay)) + 1)
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if charge := r.URL.Query().Get(chanQueryCharge); charge != "" {
		// Channel traffic: report the charge the harness asked for.
		w.Header().Set("Settlement-Overrides", `{"amount":"`+charge+`"}`)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ok": true, "n": n, "tenant": r.Header.Get("X-Tenant-Id"),
		"path": r.URL.Path, "query": r.URL.RawQuery,
	})
}

func (u *upstream) stats() map[string]int64 {
	return map[string]int64{"requests": u.n.Load(), "slow": u.slow.Load(), "500": u.fail.Load(), "reset": u.reset.Load()}
}
