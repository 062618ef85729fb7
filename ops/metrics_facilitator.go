package ops

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/402claw/dispatcher/x402"
)

// Facilitator operations, the op label of
// dispatcher_facilitator_duration_seconds and of facilitator spans.
const (
	FacilitatorVerify    = "verify"
	FacilitatorSettle    = "settle"
	FacilitatorSupported = "supported"
)

var facilitatorOps = []string{FacilitatorVerify, FacilitatorSettle, FacilitatorSupported}

// Facilitator returns f with every call timed into
// dispatcher_facilitator_duration_seconds{op}. Calls that fail are timed
// too: a slow failure is what an operator needs to see. A nil f is
// returned as is.
func (m *Metrics) Facilitator(f x402.Facilitator) x402.Facilitator {
	if f == nil {
		return nil
	}
	return &meteredFacilitator{
		next:      f,
		now:       m.now,
		verify:    m.facilitator.WithLabelValues(FacilitatorVerify),
		settle:    m.facilitator.WithLabelValues(FacilitatorSettle),
		supported: m.facilitator.WithLabelValues(FacilitatorSupported),
	}
}

type meteredFacilitator struct {
	next                      x402.Facilitator
	now                       func() time.Time
	verify, settle, supported prometheus.Observer
}

var _ x402.Facilitator = (*meteredFacilitator)(nil)

func (f *meteredFacilitator) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	start := f.now()
	r, err := f.next.Verify(ctx, req)
	f.verify.Observe(f.now().Sub(start).Seconds())
	return r, err
}

func (f *meteredFacilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	start := f.now()
	r, err := f.next.Settle(ctx, req)
	f.settle.Observe(f.now().Sub(start).Seconds())
	return r, err
}

func (f *meteredFacilitator) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	start := f.now()
	r, err := f.next.Supported(ctx)
	f.supported.Observe(f.now().Sub(start).Seconds())
	return r, err
}

// Unwrap returns the wrapped facilitator.
func (f *meteredFacilitator) Unwrap() x402.Facilitator { return f.next }
