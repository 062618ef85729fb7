package channel

import (
	"context"
	"errors"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/payment"
)

// StageChannels adapts s to the payment stage's port (payment.Channels):
// hand it to payment.Config.Channels together with s.Scheme() in
// payment.Config.Schemes. A busy or fenced channel is answered
// 409 invalid_batch_settlement_evm_channel_busy (the client retries), a
// cumulative-amount mismatch with a corrective 402.
func StageChannels(s *Service) payment.Channels { return stageChannels{s: s} }

type stageChannels struct{ s *Service }

var _ payment.Corrective = (*MismatchError)(nil)

func (c stageChannels) IsRefund(p *x402.Payment) bool {
	// A voucher the scheme just checked is not a refund: no second decode.
	return !c.s.scheme.checked.has(p) && IsRefund(p)
}

func (c stageChannels) Refund(ctx context.Context, p *x402.Payment, req x402.Requirement) (*x402.SettleResponse, error) {
	sr, err := c.s.Refund(ctx, p, req)
	return sr, stageError(err)
}

func (c stageChannels) Begin(ctx context.Context, p *x402.Payment, req x402.Requirement, m payment.ChannelMeta) (payment.ChannelHold, error) {
	h, err := c.s.BeginMeta(ctx, p, req, Meta{Tenant: m.Tenant, RequestID: m.RequestID, Resource: m.Resource})
	if err != nil {
		return nil, stageError(err)
	}
	return h, nil
}

// stageError maps the channel's errors to the gateway's: busy and fenced
// channels are 409; the rest keep their x402 sentinels, which the stage
// maps itself, and carry their specification code (payment.Coded), which
// the stage's 402 names as its error.
func stageError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrBusy) || errors.Is(err, ErrFenced) {
		return dispatch.ErrChannelBusy.With("", err)
	}
	if code := Reason(err); code != "" {
		return codedError{err: err, code: code}
	}
	return err
}

// codedError is a refusal with its specification code (payment.Coded).
type codedError struct {
	err  error
	code string
}

var _ payment.Coded = codedError{}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }
func (e codedError) Code() string  { return e.code }
