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
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
)

// DefaultKeyPrefix prefixes the nonce keys written to a kv.Store.
const DefaultKeyPrefix = "x402:localfacilitator:nonce:"

// DefaultNonceRetention is how long a settled nonce is remembered beyond
// its authorization's validBefore (or deadline) when Config.NonceRetention
// is zero.
const DefaultNonceRetention = 7 * 24 * time.Hour

// MaxNonceRetention bounds Config.NonceRetention.
const MaxNonceRetention = 365 * 24 * time.Hour

// DefaultMaxValidity is how far in the future an authorization's
// validBefore (or Permit2 deadline) may be when Config.MaxValidity is zero.
// Reference clients sign for maxTimeoutSeconds (a minute or a few).
const DefaultMaxValidity = 24 * time.Hour

// DefaultAddress is the facilitator address of a Facilitator whose
// Config.Address is empty: the address upto payments name in their
// witness.facilitator. It is a public test account (the third default
// Hardhat/Anvil account), the one the recorded upto fixture was signed
// for; it never holds funds and the local facilitator never signs with it.
const DefaultAddress = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

// ReasonValidityTooLong is the reason given for an authorization whose
// validBefore or deadline is further than Config.MaxValidity in the future:
// its nonce record could not be bounded.
const ReasonValidityTooLong = "invalid_authorization_validity_too_long"

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
	// authorization's validBefore (or deadline). Until then a replay is
	// refused by the nonce record; afterwards it is refused by the
	// validity window anyway, so the retention only matters for a new
	// authorization that reuses an old nonce (a chain would refuse it
	// forever). Zero means DefaultNonceRetention; at most
	// MaxNonceRetention.
	NonceRetention time.Duration
	// MaxValidity refuses authorizations valid for longer than this from
	// now (ReasonValidityTooLong), so that every nonce record expires:
	// a record lives at most MaxValidity plus NonceRetention. Zero means
	// DefaultMaxValidity.
	MaxValidity time.Duration
	// Address is this facilitator's address: upto payments must name it
	// in witness.facilitator, and /supported announces it. Empty means
	// DefaultAddress.
	Address string
	// RecoverCacheSize is the number of recovered signers remembered, so
	// that settling a payment just verified costs no second secp256k1
	// recovery. Zero means eip712.DefaultCacheSize; negative disables the
	// cache.
	RecoverCacheSize int
}

// Facilitator verifies x402 EVM payments offline and "settles" them by
// recording their nonce: exact over EIP-3009 (TransferWithAuthorization),
// exact over Permit2 and upto (both Permit2 PermitWitnessTransferFrom). It
// moves no funds: the transaction hash it returns is a well-formed fake,
// derived from the authorization. It is safe for concurrent use.
//
// EIP-3009 verification checks, in order: the scheme is exact and the
// network supported; the payment matches the requirement (x402.Match:
// amount, asset, recipient, authorization value and recipient); the
// validity window (validAfter < now < validBefore, in whole seconds, and
// validBefore at most MaxValidity away); the EIP-712 signature recovers to
// the authorization's from; and the nonce was not settled.
//
// Permit2 verification (exact with a permit2Authorization payload, and
// upto) checks: the network; the payload's shape; spender (the exact or
// upto proxy); token (the asset); the permitted amount (exactly the
// requirement's amount, which for upto is the maximum at verify and the
// charge, at most the signed maximum, at settle); witness.to (payTo); for
// upto witness.facilitator (this facilitator's Address and the
// requirement's facilitatorAddress); validAfter passed and the deadline
// more than permit2.DeadlineBuffer but at most MaxValidity away; the
// signature in the Permit2 domain; and the nonce, single-use per payer as
// Permit2 makes it whatever the token or witness. Balances and allowances
// are not checked.
type Facilitator struct {
	nonces      nonceStore
	prefix      string
	now         func() time.Time
	networks    []x402.Network
	retention   time.Duration
	maxValidity time.Duration
	address     string
	signers     *eip712.RecoverCache
	escrow      *Escrow // batch-settlement (escrow.go)
}

var _ x402.Facilitator = (*Facilitator)(nil)

// New returns a local facilitator.
func New(cfg Config) (*Facilitator, error) {
	f := &Facilitator{
		prefix:      cfg.KeyPrefix,
		now:         cfg.Now,
		retention:   cfg.NonceRetention,
		maxValidity: cfg.MaxValidity,
		address:     DefaultAddress,
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
	if f.retention < 0 || f.retention > MaxNonceRetention {
		return nil, fmt.Errorf("localfacilitator: NonceRetention %s is not between 0 and %s", cfg.NonceRetention, MaxNonceRetention)
	}
	if f.maxValidity == 0 {
		f.maxValidity = DefaultMaxValidity
	}
	if f.maxValidity < 0 || f.maxValidity > 100*365*24*time.Hour {
		return nil, fmt.Errorf("localfacilitator: MaxValidity %s is not between 0 and 100 years", cfg.MaxValidity)
	}
	if cfg.Address != "" {
		addr, err := eip712.ChecksumAddress(strings.TrimSpace(cfg.Address))
		if err != nil {
			return nil, fmt.Errorf("localfacilitator: Address: %w", err)
		}
		f.address = addr
	}
	f.escrow = newEscrow(f.now, f.address)
	if cfg.RecoverCacheSize >= 0 {
		f.signers = eip712.NewRecoverCache(cfg.RecoverCacheSize)
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

// Address returns the facilitator's address (EIP-55): what upto
// requirements carry as extra.facilitatorAddress.
func (f *Facilitator) Address() string { return f.address }

// verdict is the outcome of checking one payment.
type verdict struct {
	reason string    // "" when valid
	payer  string    // the authorization's from
	key    string    // the nonce record key
	before time.Time // validBefore or deadline
	nonce  string    // the nonce, for the transaction hash
	method string    // "eip3009" or "permit2"
}

// Verify checks the payment without recording anything. A payment that
// fails a check is a VerifyResponse with IsValid false and the reason; an
// error means the nonce store failed (it wraps
// x402.ErrFacilitatorUnavailable) or the request has no payment.
func (f *Facilitator) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	if req.Payment == nil {
		return nil, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	if req.Requirement.Scheme == channel.Name {
		return f.escrow.verify(ctx, req)
	}
	v, err := f.check(ctx, req, false)
	if err != nil {
		return nil, err
	}
	return &x402.VerifyResponse{IsValid: v.reason == "", InvalidReason: v.reason, Payer: v.payer}, nil
}

// Settle verifies the payment, then records its nonce atomically (SetNX):
// of concurrent or repeated settlements of one authorization exactly one
// succeeds; the others fail with x402.ReasonNonceUsed.
//
// For upto the requirement's amount is the charge (as the upto
// specification passes it to /settle): it may be anything from zero to
// the signed maximum, and the response's Amount reports it. A charge of
// zero succeeds with an empty transaction hash; the nonce is recorded all
// the same, so the authorization cannot be settled again.
func (f *Facilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	if req.Payment == nil {
		return nil, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	if req.Requirement.Scheme == channel.Name {
		return f.escrow.settle(ctx, req)
	}
	p := req.Payment
	resp := &x402.SettleResponse{
		Network: x402.NetworkForVersion(req.Requirement.Network, p.Version),
	}
	v, err := f.check(ctx, req, true)
	if err != nil {
		return nil, err
	}
	resp.Payer = v.payer
	if v.reason != "" {
		resp.ErrorReason = v.reason
		return resp, nil
	}
	ok, err := f.nonces.claim(ctx, v.key, f.nonceTTL(v.before))
	if err != nil {
		return nil, fmt.Errorf("%w: local nonce store: %w", x402.ErrFacilitatorUnavailable, err)
	}
	if !ok {
		resp.ErrorReason = x402.ReasonNonceUsed
		return resp, nil
	}
	resp.Success = true
	if req.Requirement.Scheme == upto.Name {
		// The upto settle response carries the amount charged.
		n, _ := eip712.ParseUint256(req.Requirement.Amount) // checked
		resp.Amount = n.String()
		if n.Sign() == 0 {
			return resp, nil // nothing to transfer: no transaction
		}
	}
	resp.Transaction = transactionHash(req.Requirement.Network, req.Requirement.Asset, v)
	return resp, nil
}

// Supported lists, on each configured network: exact in both protocol
// versions (EIP-3009, and in version 2 also Permit2: the exact kind covers
// both transfer methods, as with the reference facilitators), and upto in
// version 2 with extra.facilitatorAddress. Signers lists the
// facilitator's address.
func (f *Facilitator) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	r := &x402.SupportedResponse{
		Kinds:      make([]x402.SupportedKind, 0, 3*len(f.networks)),
		Extensions: []string{},
		Signers:    map[string][]string{"eip155:*": {f.address}},
	}
	for _, nw := range f.networks {
		r.Kinds = append(r.Kinds,
			x402.SupportedKind{X402Version: x402.Version2, Scheme: x402.SchemeExact, Network: nw.ID},
			x402.SupportedKind{X402Version: x402.Version1, Scheme: x402.SchemeExact, Network: nw.V1Name},
			x402.SupportedKind{X402Version: x402.Version2, Scheme: upto.Name, Network: nw.ID,
				Extra: map[string]any{upto.ExtraFacilitatorAddress: f.address}},
			x402.SupportedKind{X402Version: x402.Version2, Scheme: channel.Name, Network: nw.ID,
				Extra: map[string]any{channel.ExtraReceiverAuthorizer: f.address}},
		)
	}
	return r, nil
}

// TransactionHash returns the fake transaction hash of a settlement:
// 0x and 64 hex digits, Keccak-256 of the chain id, asset (or the Permit2
// contract), payer and nonce, so the same authorization always yields the
// same hash.
func TransactionHash(req x402.FacilitatorRequest) string {
	p := req.Payment
	v := verdict{method: "eip3009", payer: p.Payer, nonce: p.Authorization.Nonce}
	if usesPermit2(req.Requirement, p) {
		v.method = "permit2"
		if pl, err := permit2.DecodePayload(p.Payload); err == nil {
			v.payer, v.nonce = pl.Permit2Authorization.From, pl.Permit2Authorization.Nonce
		} else if pl, err := upto.DecodePayload(p.Payload); err == nil {
			v.payer, v.nonce = pl.Permit2Authorization.From, pl.Permit2Authorization.Nonce
		}
	}
	return transactionHash(req.Requirement.Network, req.Requirement.Asset, v)
}

func transactionHash(network, asset string, v verdict) string {
	chainID, _ := x402.EVMChainID(network)
	scope := strings.ToLower(asset)
	if v.method == "permit2" {
		scope = "permit2"
	}
	h := eip712.Keccak256([]byte("localfacilitator-settlement:"+strconv.FormatInt(chainID, 10)+":"),
		[]byte(scope+":"),
		[]byte(strings.ToLower(v.payer)+":"),
		[]byte(strings.ToLower(v.nonce)))
	return "0x" + fmt.Sprintf("%x", h[:])
}

// usesPermit2 reports whether a payment goes through Permit2: upto always;
// exact when the requirement says assetTransferMethod "permit2", or says
// nothing and the payload has the Permit2 shape.
func usesPermit2(r x402.Requirement, p *x402.Payment) bool {
	if r.Scheme == upto.Name {
		return true
	}
	switch r.ExtraString(permit2.ExtraAssetTransferMethod) {
	case permit2.TransferMethod:
		return true
	case "":
		return p != nil && permit2.HasPermit2Authorization(p.Payload)
	default:
		return false
	}
}

// check returns the verdict on a payment (reason "" when valid). settling
// selects the settle-time rules (the upto charge may be below the
// maximum).
func (f *Facilitator) check(ctx context.Context, req x402.FacilitatorRequest, settling bool) (verdict, error) {
	r := req.Requirement
	var v verdict
	switch {
	case r.Scheme != x402.SchemeExact && r.Scheme != upto.Name:
		v = verdict{reason: x402.ReasonInvalidScheme, payer: req.Payment.Payer}
	case !f.supports(r.Network):
		v = verdict{reason: x402.ReasonInvalidNetwork, payer: req.Payment.Payer}
	case usesPermit2(r, req.Payment):
		v = f.checkPermit2(req, settling)
	default:
		v = f.checkEIP3009(req)
	}
	if v.reason != "" {
		return v, nil
	}
	used, err := f.nonces.used(ctx, v.key)
	if err != nil {
		return v, fmt.Errorf("%w: local nonce store: %w", x402.ErrFacilitatorUnavailable, err)
	}
	if used {
		v.reason = x402.ReasonNonceUsed
	}
	return v, nil
}

func (f *Facilitator) checkEIP3009(req x402.FacilitatorRequest) verdict {
	p, r := req.Payment, req.Requirement
	v := verdict{payer: p.Payer, method: "eip3009", nonce: p.Authorization.Nonce}
	if r.Scheme != x402.SchemeExact {
		v.reason = x402.ReasonInvalidScheme
		return v
	}
	if err := x402.Match(r, p); err != nil {
		var me *x402.MismatchError
		if errors.As(err, &me) {
			v.reason = me.Reason()
		} else {
			v.reason = x402.ReasonInvalidRequirements
		}
		return v
	}
	now := f.now()
	after, err1 := strconv.ParseInt(p.Authorization.ValidAfter, 10, 64)
	before, err2 := strconv.ParseInt(p.Authorization.ValidBefore, 10, 64)
	if err1 != nil || err2 != nil {
		v.reason = x402.ReasonInvalidPayload
		return v
	}
	switch {
	case now.Unix() <= after:
		v.reason = x402.ReasonValidAfter
	case now.Unix() >= before:
		v.reason = x402.ReasonValidBefore
	case before-now.Unix() > int64(f.maxValidity/time.Second):
		v.reason = ReasonValidityTooLong
	}
	if v.reason != "" {
		return v
	}
	v.before = time.Unix(before, 0)
	domain, err := DomainFor(r)
	if err != nil {
		v.reason = x402.ReasonInvalidRequirements
		return v
	}
	digest, err := Digest(domain, p.Authorization)
	if err != nil {
		v.reason = x402.ReasonInvalidPayload
		return v
	}
	signer, err := f.signers.Recover(digest, p.Signature)
	if err != nil || !strings.EqualFold(signer, p.Authorization.From) {
		v.reason = x402.ReasonInvalidSignature
		return v
	}
	v.key = f.eip3009Key(r, p)
	return v
}

// checkPermit2 checks an exact-permit2 or upto payment.
func (f *Facilitator) checkPermit2(req x402.FacilitatorRequest, settling bool) verdict {
	p, r := req.Payment, req.Requirement
	v := verdict{method: "permit2"}
	isUpto := r.Scheme == upto.Name
	if p.Accepted.Scheme != "" && p.Accepted.Scheme != r.Scheme {
		v.reason = x402.ReasonInvalidScheme
		return v
	}
	if p.Accepted.Network != "" && x402.NormalizeNetwork(p.Accepted.Network) != x402.NormalizeNetwork(r.Network) {
		v.reason = x402.ReasonInvalidNetwork
		return v
	}
	var (
		permit      permit2.Permit
		signature   string
		digest      [32]byte
		facilitator string
		err         error
	)
	chainID, _ := x402.EVMChainID(r.Network)
	if isUpto {
		pl, derr := upto.DecodePayload(p.Payload)
		if derr != nil {
			v.reason = x402.ReasonInvalidPayload
			return v
		}
		a := pl.Permit2Authorization
		permit, signature, facilitator = a.Permit(), pl.Signature, a.Witness.Facilitator
		digest, err = a.Digest(chainID)
	} else {
		pl, derr := permit2.DecodePayload(p.Payload)
		if derr != nil {
			v.reason = x402.ReasonInvalidPayload
			return v
		}
		a := pl.Permit2Authorization
		permit, signature = a.Permit(), pl.Signature
		digest, err = a.Digest(chainID)
	}
	v.payer, v.nonce = permit.From, permit.Nonce
	if err != nil {
		v.reason = x402.ReasonInvalidPayload
		return v
	}
	spender := permit2.ExactProxy
	want := r
	if isUpto {
		spender = permit2.UptoProxy
		if settling {
			// The requirement's amount is the charge: at most the signed
			// maximum; the signature is checked against the maximum.
			charge, cerr := eip712.ParseUint256(r.Amount)
			max, _ := eip712.ParseUint256(permit.Amount)
			if cerr != nil {
				v.reason = x402.ReasonInvalidRequirements
				return v
			}
			if charge.Cmp(max) > 0 {
				v.reason = upto.ReasonSettlementExceedsAmount
				return v
			}
			want.Amount = permit.Amount
		}
	}
	now := f.now()
	if err := permit.Check(want, spender, now); err != nil {
		v.reason = permit2.Reason(err)
		return v
	}
	if isUpto {
		if !strings.EqualFold(facilitator, f.address) {
			v.reason = upto.ReasonUnauthorizedFacilitator
			return v
		}
		if a := r.ExtraString(upto.ExtraFacilitatorAddress); a != "" && !strings.EqualFold(a, facilitator) {
			v.reason = upto.ReasonFacilitatorMismatch
			return v
		}
	}
	v.before = permit2.UnixTime(permit.Deadline)
	if v.before.Sub(now) > f.maxValidity {
		v.reason = ReasonValidityTooLong
		return v
	}
	signer, err := f.signers.Recover(digest, signature)
	if err != nil || !strings.EqualFold(signer, permit.From) {
		v.reason = permit2.ReasonInvalidSignature
		return v
	}
	v.key = f.prefix + strconv.FormatInt(chainID, 10) + ":permit2:" + strings.ToLower(permit.From) + ":" + permit.Nonce
	return v
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

// eip3009Key scopes a nonce as EIP-3009 does: per token contract and payer.
func (f *Facilitator) eip3009Key(r x402.Requirement, p *x402.Payment) string {
	chainID, _ := x402.EVMChainID(r.Network)
	return f.prefix + strconv.FormatInt(chainID, 10) + ":" +
		strings.ToLower(r.Asset) + ":" +
		strings.ToLower(p.Payer) + ":" +
		strings.ToLower(p.Authorization.Nonce)
}

// nonceTTL keeps the record until the authorization expires plus the
// retention. Authorizations valid for longer than maxValidity are refused
// before this, and the result is clamped anyway, so every record expires
// within maxValidity + retention.
func (f *Facilitator) nonceTTL(before time.Time) time.Duration {
	ttl := before.Sub(f.now()) + f.retention
	if limit := f.maxValidity + f.retention; ttl > limit {
		ttl = limit
	}
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

// memNonces is the in-memory nonce store: a map from key to expiry, swept
// of expired entries every sweepEvery claims.
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
	return ok && m.now().Before(exp), nil
}

func (m *memNonces) claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if exp, ok := m.m[key]; ok && now.Before(exp) {
		return false, nil
	}
	m.m[key] = now.Add(ttl)
	m.claims++
	if m.claims%sweepEvery == 0 {
		for k, e := range m.m {
			if !now.Before(e) {
				delete(m.m, k)
			}
		}
	}
	return true, nil
}
