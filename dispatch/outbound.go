package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
)

// Budget counts a worker's subrequests. The dispatcher makes one per request
// from the limits and puts it in the request context; an in-process worker
// gets its outbound client with OutboundClient(ctx).
type Budget struct {
	limit    int64
	used     atomic.Int64
	exceeded atomic.Bool
}

// NewBudget returns a budget allowing limit subrequests.
func NewBudget(limit int) *Budget { return &Budget{limit: int64(limit)} }

// Take spends one subrequest, or reports false (and remembers that the
// worker went over its limit) when none is left. It is exact under
// concurrency: with a limit of N, exactly N calls succeed.
func (b *Budget) Take() bool {
	if b.used.Add(1) > b.limit {
		b.used.Add(-1)
		b.exceeded.Store(true)
		return false
	}
	return true
}

// Used returns the subrequests spent.
func (b *Budget) Used() int { return int(b.used.Load()) }

// Exceeded reports whether the worker tried to go over its limit.
func (b *Budget) Exceeded() bool { return b.exceeded.Load() }

type budgetKey struct{}

// WithBudget returns ctx carrying b.
func WithBudget(ctx context.Context, b *Budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

// budgetCtx is a context carrying a budget: the two in one allocation. It
// passes every other key to its parent, so context.WithTimeout still finds
// the request's own cancel context.
type budgetCtx struct {
	context.Context
	b Budget
}

func (c *budgetCtx) Value(key any) any {
	if key == (budgetKey{}) {
		return &c.b
	}
	return c.Context.Value(key)
}

// withNewBudget returns ctx carrying a new budget of limit subrequests.
func withNewBudget(ctx context.Context, limit int) (context.Context, *Budget) {
	c := &budgetCtx{Context: ctx, b: Budget{limit: int64(limit)}}
	return c, &c.b
}

// BudgetFrom returns the budget in ctx, if any.
func BudgetFrom(ctx context.Context) (*Budget, bool) {
	b, ok := ctx.Value(budgetKey{}).(*Budget)
	return b, ok
}

// ErrSubrequestLimit is returned by the outbound client for the request
// that would go over the worker's subrequest limit. It wraps
// ErrWorkerLimitExceeded.
var ErrSubrequestLimit = fmt.Errorf("%w: subrequest limit reached", ErrWorkerLimitExceeded)

// OutboundClient returns the HTTP client a worker must use for its
// subrequests. It counts them against the budget in ctx and refuses request
// N+1 with ErrSubrequestLimit without sending it. With no budget in ctx it
// refuses every request, so a worker cannot escape its limits by accident.
// base is the transport to use (http.DefaultTransport when nil).
func OutboundClient(ctx context.Context, base http.RoundTripper) *http.Client {
	b, ok := BudgetFrom(ctx)
	if !ok {
		b = NewBudget(0)
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return &http.Client{Transport: &countingTransport{budget: b, base: base}}
}

type countingTransport struct {
	budget *Budget
	base   http.RoundTripper
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.budget.Take() {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, ErrSubrequestLimit
	}
	return t.base.RoundTrip(r)
}
