package localfacilitator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// DefaultKeyPrefix prefixes the nonce keys written to a kv.Store.
const DefaultKeyPrefix = "x402:localfacilitator:nonce:"

// DefaultNonceRetention is how long a settled nonce is remembered beyond
// its authorization's validBefore when Config.NonceRetention is zero.
const DefaultNonceRetention = 7 * 24 * time.Hour

// Config configures a Facilitator. The zero value is usable.
type Config struct {
	// Store records settled nonces (SetNX), so several gateway replicas
	// sharing one store never settle a nonce twice. Nil means an in-memory,
	// concurrency-safe map private to this Facilitator.
	Store kv.Store
	// KeyPrefix prefixes nonce keys in Store; empty means DefaultKeyPrefix.
	KeyPrefix string
	// Now is the clock; nil means time.Now. Tests set it to a fixture's
	// signing time.
	Now func() time.Time
	// Networks lists the networks accepted (CAIP-2 ids or version 1
	// names from the x402 network table); empty means all of them.
	Networks []string
	// NonceRetention is how long a settled nonce is kept beyond the
	// authorization's validBefore. Until validBefore a replay is refused by
	// the nonce record; afterwards it is refused by the validity window
	// anyway, so the retention only matters for a new authorization that
	// reuses an old nonce (a chain would refuse it forever). Zero means
	// DefaultNonceRetention.
	NonceRetention time.Duration
}

// Facilitator verifies EIP-3009 TransferWithAuthorization payments offline
// and "settles" them by recording their nonce. It moves no funds: the
// transaction hash it returns is a well-formed fake, derived from the
// authorization. It is safe for concurrent use.
//
// Verification checks, in order: the scheme is exact and the network
// supported; the payment matches the requirement (x402.Match: amount,
// asset, recipient, authorization value and recipient); the validity window
// (validAfter < now < validBefore, in whole seconds); the EIP-712 signature
// recovers to the authorization's from; and the nonce was not settled.
// Balances are not checked.
type Facilitator struct {
	nonces    nonceStore
	prefix    string
	now       func() time.Time
	networks  []x402.Network
	retention time.Duration
}

var _ x402.Facilitator = (*Facilitator)(nil)

// New returns a local facilitator.
func New(cfg Config) (*Facilitator, error) {
	f := &Facilitator{
		prefix:    cfg.KeyPrefix,
		now:       cfg.Now,
		retention: cfg.NonceRetention,
	}
	if f.prefix == "" {
		f.prefix = DefaultKeyPrefix
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.retention == 0 {
		f.retention = DefaultNonceRetention
	}
	if f.retention < 0 {
		return nil, fmt.Errorf("localfacilitator: negative NonceRetention %s", cfg.NonceRetention)
	}
	if cfg.Store != nil {
		f.nonces = kvNonces{cfg.Store}
	} else {
		f.nonces = newMemNonces(f.now)
	}
	if len(cfg.Networks) == 0 {
		f.networks = x402.Networks()
	}
	for _, name := range cfg.Networks {
		nw, err := x402.LookupNetwork(name)
		if err != nil {
			return nil, fmt.Errorf("localfacilitator: %w", err)
		}
		f.networks = append(f.networks, nw)
	}
	return f, nil
}

// Verify checks the payment without recording anything. A payment that
// fails a check is a VerifyResponse with IsValid false and the reason; an
// error means the nonce store failed (it wraps
// x402.ErrFacilitatorUnavailable) or the request has no payment.
func (f *Facilitator) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	if req.Payment == nil {
		return nil, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	reason, err := f.check(ctx, req)
	if err != nil {
		return nil, err
	}
	return &x402.VerifyResponse{IsValid: reason == "", InvalidReason: reason, Payer: req.Payment.Payer}, nil
}

// Settle verifies the payment, then records its nonce atomically (SetNX):
// of concurrent or repeated settlements of one authorization exactly one
// succeeds; the others fail with x402.ReasonNonceUsed.
func (f *Facilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	if req.Payment == nil {
		return nil, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	p := req.Payment
	resp := &x402.SettleResponse{
		Payer:   p.Payer,
		Network: x402.NetworkForVersion(req.Requirement.Network, p.Version),
	}
	reason, err := f.check(ctx, req)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		resp.ErrorReason = reason
		return resp, nil
	}
	ok, err := f.nonces.claim(ctx, f.nonceKey(req), f.nonceTTL(p))
	if err != nil {
		return nil, fmt.Errorf("%w: local nonce store: %w", x402.ErrFacilitatorUnavailable, err)
	}
	if !ok {
		resp.ErrorReason = x402.ReasonNonceUsed
		return resp, nil
	}
	resp.Success = true
	resp.Transaction = TransactionHash(req)
	return resp, nil
}

// Supported lists exact payments on the configured networks, in both
// protocol versions.
func (f *Facilitator) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	r := &x402.SupportedResponse{
		Kinds:      make([]x402.SupportedKind, 0, 2*len(f.networks)),
		Extensions: []string{},
		Signers:    map[string][]string{"eip155:*": {}},
	}
	for _, nw := range f.networks {
		r.Kinds = append(r.Kinds,
			x402.SupportedKind{X402Version: x402.Version2, Scheme: x402.SchemeExact, Network: nw.ID},
			x402.SupportedKind{X402Version: x402.Version1, Scheme: x402.SchemeExact, Network: nw.V1Name},
		)
	}
	return r, nil
}

// TransactionHash returns the fake transaction hash of a settlement:
// 0x and 64 hex digits, Keccak-256 of the chain id, asset, payer and nonce,
// so the same authorization always yields the same hash.
func TransactionHash(req x402.FacilitatorRequest) string {
	chainID, _ := x402.EVMChainID(req.Requirement.Network)
	h := eip712.Keccak256([]byte("localfacilitator-settlement:"+strconv.FormatInt(chainID, 10)+":"),
		[]byte(strings.ToLower(req.Requirement.Asset)+":"),
		[]byte(strings.ToLower(req.Payment.Payer)+":"),
		[]byte(strings.ToLower(req.Payment.Authorization.Nonce)))
	return "0x" + fmt.Sprintf("%x", h[:])
}

// check returns "" when the payment is valid, otherwise the reason.
func (f *Facilitator) check(ctx context.Context, req x402.FacilitatorRequest) (string, error) {
	p, r := req.Payment, req.Requirement
	if r.Scheme != x402.SchemeExact {
		return x402.ReasonInvalidScheme, nil
	}
	if !f.supports(r.Network) {
		return x402.ReasonInvalidNetwork, nil
	}
	if err := x402.Match(r, p); err != nil {
		var me *x402.MismatchError
		if errors.As(err, &me) {
			return me.Reason(), nil
		}
		return x402.ReasonInvalidRequirements, nil
	}
	now := f.now().Unix()
	after, err1 := strconv.ParseInt(p.Authorization.ValidAfter, 10, 64)
	before, err2 := strconv.ParseInt(p.Authorization.ValidBefore, 10, 64)
	if err1 != nil || err2 != nil {
		return x402.ReasonInvalidPayload, nil
	}
	if now <= after {
		return x402.ReasonValidAfter, nil
	}
	if now >= before {
		return x402.ReasonValidBefore, nil
	}
	domain, err := DomainFor(r)
	if err != nil {
		return x402.ReasonInvalidRequirements, nil
	}
	digest, err := Digest(domain, p.Authorization)
	if err != nil {
		return x402.ReasonInvalidPayload, nil
	}
	signer, err := RecoverSigner(digest, p.Signature)
	if err != nil || !strings.EqualFold(signer, p.Authorization.From) {
		return x402.ReasonInvalidSignature, nil
	}
	used, err := f.nonces.used(ctx, f.nonceKey(req))
	if err != nil {
		return "", fmt.Errorf("%w: local nonce store: %w", x402.ErrFacilitatorUnavailable, err)
	}
	if used {
		return x402.ReasonNonceUsed, nil
	}
	return "", nil
}

func (f *Facilitator) supports(network string) bool {
	id := x402.NormalizeNetwork(network)
	for _, nw := range f.networks {
		if nw.ID == id {
			return true
		}
	}
	return false
}

// nonceKey scopes a nonce as EIP-3009 does: per token contract and payer.
func (f *Facilitator) nonceKey(req x402.FacilitatorRequest) string {
	chainID, _ := x402.EVMChainID(req.Requirement.Network)
	return f.prefix + strconv.FormatInt(chainID, 10) + ":" +
		strings.ToLower(req.Requirement.Asset) + ":" +
		strings.ToLower(req.Payment.Payer) + ":" +
		strings.ToLower(req.Payment.Authorization.Nonce)
}

// nonceTTL keeps the record until validBefore plus the retention; an
// authorization valid for more than a century is recorded without expiry.
func (f *Facilitator) nonceTTL(p *x402.Payment) time.Duration {
	now, before := f.now(), p.ValidBefore()
	if before.IsZero() || before.Year() > now.Year()+100 || f.retention > 100*365*24*time.Hour {
		return 0
	}
	ttl := before.Sub(now) + f.retention
	if ttl < time.Minute {
		ttl = time.Minute
	}
	return ttl
}

// nonceStore records settled nonces.
type nonceStore interface {
	used(ctx context.Context, key string) (bool, error)
	claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

type kvNonces struct{ s kv.Store }

func (k kvNonces) used(ctx context.Context, key string) (bool, error) {
	_, err := k.s.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (k kvNonces) claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return k.s.SetNX(ctx, key, []byte("settled"), ttl)
}

// memNonces is the in-memory nonce store: a map from key to expiry (zero
// for none), swept of expired entries every sweepEvery claims.
type memNonces struct {
	mu     sync.Mutex
	m      map[string]time.Time
	claims int
	now    func() time.Time
}

const sweepEvery = 4096

func newMemNonces(now func() time.Time) *memNonces {
	return &memNonces{m: make(map[string]time.Time), now: now}
}

func (m *memNonces) used(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.m[key]
	return ok && (exp.IsZero() || m.now().Before(exp)), nil
}

func (m *memNonces) claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if exp, ok := m.m[key]; ok && (exp.IsZero() || now.Before(exp)) {
		return false, nil
	}
	var exp time.Time
	if ttl > 0 {
		exp = now.Add(ttl)
	}
	m.m[key] = exp
	m.claims++
	if m.claims%sweepEvery == 0 {
		for k, e := range m.m {
			if !e.IsZero() && !now.Before(e) {
				delete(m.m, k)
			}
		}
	}
	return true, nil
}
