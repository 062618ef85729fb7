package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

// Channel traffic (-mix channels, or -channel-payers N with any mix): payers
// that pay over batch-settlement payment channels, each a sequential actor
// with its own channel at a time, as a real channel client is:
//
//   - open: a 402 challenge for the channel route, then a deposit payload
//     (deposit plus the first voucher); a deposit the gateway did not take
//     is sent again on the same channel with a fresh authorization;
//   - vouchers: one per request, maxClaimableAmount = the charged
//     cumulative amount the gateway last reported + the per-request
//     maximum; the worker reports a charge (Settlement-Overrides) the
//     harness picks, from zero to the maximum, now and then above it
//     (which the gateway must refuse, charging nothing);
//   - concurrency: now and then the same voucher is sent 2-4 times at once
//     (exactly one may be charged: the others get 409 channel_busy or a
//     corrective 402), and now and then a stale voucher, as a client that
//     missed an answer sends; a corrective 402's channelState is checked
//     (its voucherState must be this payer's own signature, its charged
//     amount within what was signed) and adopted;
//   - top-ups: a deposit on the open channel when the next voucher would
//     exceed the balance; refunds: now and then a cooperative refund of
//     part or all of the remainder;
//   - a channel held busy by a request a SIGKILL cut off (its lease
//     outlives the process) is abandoned after a while for a new one.
//
// Every request is logged (chanRecord) for the checks of chaninvariants.go,
// and the client-side checks of each answer are recorded as anomalies.

// Outcomes of channel requests.
const (
	outChanCharged    = "channel charged"        // 2xx with a channel PAYMENT-RESPONSE
	outChanRefunded   = "channel refunded"       // 2xx to a refund
	outChanNoReceipt  = "2xx channel no-receipt" // 2xx without a usable PAYMENT-RESPONSE: a bug
	outChanCorrective = "402 corrective"         // 402 with extra.channelState
	outChanBusy       = "409 channel_busy"       // 409 invalid_batch_settlement_evm_channel_busy
	outChanRefused    = "402 channel refused"    // 402 without a channel state
	outSignError      = "sign_error"             // the harness could not sign
)

// The channel workload's shape.
const (
	channelRoute      = "/ch/*"               // the channel-priced route of the channel tenants
	channelMaxUSD     = "0.001"               // its per-request maximum
	chanQueryCharge   = "lgcharge"            // query parameter: the charge the worker reports
	chanBusyGiveUp    = 4 * time.Second       // a channel busy this long is abandoned
	chanConnBackoff   = 40 * time.Millisecond // pause after a transport error (the gateway may be down)
	chanBusyBackoff   = 15 * time.Millisecond // pause after a 409
	chanDepositSteps  = 25                    // a deposit covers about this many maximum charges
	chanStepsPerOpen  = 60                    // about this many requests on a channel before the next
	chanMaxOpenTries  = 6                     // failed deposits before a payer starts over
	chanRefundPercent = 3                     // share of steps that are refunds
	chanBurstPercent  = 10                    // share of steps sending one voucher several times at once
	chanStalePercent  = 4                     // share of steps sending a stale voucher
	chanOverPercent   = 2                     // share of steps whose worker reports above the maximum
	chanZeroPercent   = 5                     // share of charges that are zero
	chanFullPercent   = 35                    // share of charges that are the maximum
	chanBurstMax      = 4                     // most copies of a voucher sent at once
	chanRefundPart    = 2                     // one refund in this many asks for a part of the remainder
	chanStaleMaxSteps = 3                     // how many maximum charges behind a stale voucher is, at most
	chanPayersDefault = 12                    // -channel-payers of -mix channels
	chanTenantsCount  = 2                     // channel tenants generated
)

// chanRecord is one request the harness sent on a channel, and what it saw.
type chanRecord struct {
	Start, End time.Time
	Tenant     string
	Channel    string
	Payer      string
	Kind       string // deposit, voucher, refund
	Burst      bool   // one of several copies of a voucher sent at once
	SignedMax  uint64 // the voucher's maxClaimableAmount
	Deposit    uint64 // a deposit's amount
	AskCharge  uint64 // the charge the worker was told to report
	Status     int    // 0: transport error
	Outcome    string
	// From a 2xx: extra.chargedAmount and the channel state after it.
	Charged    uint64
	Cumulative uint64
	Balance    uint64
	HasState   bool
	Refunded   uint64 // a refund's amount
	Err        string
}

// chanAnomaly is something a payer saw that must never happen.
type chanAnomaly struct {
	Channel string
	What    string
}

// channelLog collects what the channel payers did.
type channelLog struct {
	mu        sync.Mutex
	records   []chanRecord
	signed    map[string]map[uint64]bool // channel -> maxClaimableAmounts signed
	channels  map[string]chanInfo
	anomalies []chanAnomaly
}

// chanInfo is what the harness knows of a channel it opened.
type chanInfo struct {
	Tenant, Payer string
	Amount        uint64 // the per-request maximum
	Receiver      string
	Token         string
}

func newChannelLog() *channelLog {
	return &channelLog{signed: map[string]map[uint64]bool{}, channels: map[string]chanInfo{}}
}

func (l *channelLog) add(r chanRecord) {
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
}

func (l *channelLog) sign(id string, max uint64) {
	l.mu.Lock()
	if l.signed[id] == nil {
		l.signed[id] = map[uint64]bool{}
	}
	l.signed[id][max] = true
	l.mu.Unlock()
}

func (l *channelLog) anomaly(id, format string, args ...any) {
	l.mu.Lock()
	l.anomalies = append(l.anomalies, chanAnomaly{Channel: id, What: fmt.Sprintf(format, args...)})
	l.mu.Unlock()
}

func (l *channelLog) opened(id string, info chanInfo) {
	l.mu.Lock()
	if _, ok := l.channels[id]; !ok {
		l.channels[id] = info
	}
	l.mu.Unlock()
}

// snapshot returns copies of what was logged.
func (l *channelLog) snapshot() ([]chanRecord, map[string]map[uint64]bool, map[string]chanInfo, []chanAnomaly) {
	l.mu.Lock()
	defer l.mu.Unlock()
	signed := make(map[string]map[uint64]bool, len(l.signed))
	for id, m := range l.signed {
		c := make(map[uint64]bool, len(m))
		for k := range m {
			c[k] = true
		}
		signed[id] = c
	}
	chs := make(map[string]chanInfo, len(l.channels))
	for k, v := range l.channels {
		chs[k] = v
	}
	return append([]chanRecord(nil), l.records...), signed, chs, append([]chanAnomaly(nil), l.anomalies...)
}

// channelTraffic drives the channel payers.
type channelTraffic struct {
	base    string
	tenants []*tenantSpec
	keys    []*secp256k1.PrivateKey
	client  *http.Client
	rec     *recorder
	log     *channelLog
}

func newChannelTraffic(base string, tenants []*tenantSpec, payers int, rec *recorder) (*channelTraffic, error) {
	c := &channelTraffic{
		base: base, tenants: tenants, rec: rec, log: newChannelLog(),
		client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns: 8 * payers, MaxIdleConnsPerHost: 8 * payers,
				IdleConnTimeout: 30 * time.Second, DisableCompression: true,
			},
		},
	}
	for i := 0; i < payers; i++ {
		k, err := secp256k1.GeneratePrivateKey()
		if err != nil {
			return nil, err
		}
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// run runs every payer until ctx is done.
func (c *channelTraffic) run(ctx context.Context, seed uint64) {
	var wg sync.WaitGroup
	for i, k := range c.keys {
		rng := rand.New(rand.NewPCG(seed, 1<<32+uint64(i)))
		p := &chanPayer{t: c, cl: channel.NewClient(k), rng: rng}
		wg.Go(func() { p.run(ctx) })
	}
	wg.Wait()
}

// chanPayer is one paying client.
type chanPayer struct {
	t   *channelTraffic
	cl  *channel.Client
	rng *rand.Rand
}

// openChannel is the payer's view of its current channel.
type openChannel struct {
	tenant  *tenantSpec
	req     x402.Requirement
	cfg     channel.ChannelConfig
	id      string
	chainID int64
	amount  uint64 // per-request maximum
	charged uint64 // chargedCumulativeAmount as last reported
	balance uint64 // balance as last reported
	open    bool   // the gateway has taken a deposit
	// busySince is when the channel started answering 409 busy.
	busySince time.Time
}

func (p *chanPayer) run(ctx context.Context) {
	for ctx.Err() == nil {
		ch := p.challenge(ctx)
		if ch == nil {
			sleepCtx(ctx, chanConnBackoff)
			continue
		}
		if !p.openChannel(ctx, ch) {
			continue
		}
		steps := chanStepsPerOpen/2 + p.rng.IntN(chanStepsPerOpen)
		for i := 0; i < steps && ctx.Err() == nil; i++ {
			if !p.step(ctx, ch) {
				break
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (p *chanPayer) path() string {
	return fmt.Sprintf("/ch/items/%d", p.rng.IntN(1000))
}

// challenge asks a channel tenant for its 402 and builds a channel config.
func (p *chanPayer) challenge(ctx context.Context) *openChannel {
	t := pick(p.rng, p.t.tenants)
	r := chanRecord{Start: time.Now(), Tenant: t.Slug, Payer: p.cl.Address(), Kind: "challenge"}
	status, h, body, err := p.t.do(ctx, t, p.path(), "", p.cl.Address())
	p.t.observe(&r, status, h, body, err)
	if status != http.StatusPaymentRequired {
		return nil
	}
	req, ok := channelRequirement(h)
	if !ok {
		p.t.log.anomaly("", "%s: a challenge without a batch-settlement entry", t.Slug)
		return nil
	}
	amount, err := strconv.ParseUint(req.Amount, 10, 64)
	if err != nil || amount == 0 {
		p.t.log.anomaly("", "%s: batch-settlement amount %q", t.Slug, req.Amount)
		return nil
	}
	cfg, err := p.cl.ChannelConfig(req, channel.RandomSalt())
	if err != nil {
		p.t.log.anomaly("", "%s: channel config: %v", t.Slug, err)
		return nil
	}
	chainID, _ := x402.EVMChainID(req.Network)
	id, err := cfg.ID(chainID)
	if err != nil {
		return nil
	}
	p.t.log.opened(id, chanInfo{Tenant: t.Slug, Payer: p.cl.Address(), Amount: amount, Receiver: req.PayTo, Token: req.Asset})
	return &openChannel{tenant: t, req: req, cfg: cfg, id: id, chainID: chainID, amount: amount}
}

// openChannel deposits until the gateway has taken a deposit.
func (p *chanPayer) openChannel(ctx context.Context, ch *openChannel) bool {
	for try := 0; try < chanMaxOpenTries && ctx.Err() == nil; try++ {
		r := p.deposit(ctx, ch)
		if ch.open {
			return true
		}
		if r.Status == 0 {
			sleepCtx(ctx, chanConnBackoff)
		}
	}
	return false
}

// deposit sends a deposit (a first one or a top-up) with the next voucher.
func (p *chanPayer) deposit(ctx context.Context, ch *openChannel) chanRecord {
	n := uint64(chanDepositSteps/2 + p.rng.IntN(chanDepositSteps))
	amount := n * ch.amount
	max := ch.charged + ch.amount
	if need := max; ch.balance+amount < need {
		amount = need - ch.balance
	}
	now := time.Now()
	pl, err := p.cl.DepositPayload(ch.req, ch.cfg, amount, max, now.Add(-time.Minute), now.Add(time.Duration(max64(ch.req.MaxTimeoutSeconds, 60))*time.Second))
	r := chanRecord{Tenant: ch.tenant.Slug, Channel: ch.id, Payer: p.cl.Address(), Kind: channel.TypeDeposit, SignedMax: max, Deposit: amount}
	if err != nil {
		r.Outcome, r.Err = outSignError, err.Error()
		p.t.log.add(r)
		return r
	}
	p.t.log.sign(ch.id, max)
	r.AskCharge = p.pickCharge(ch.amount)
	return p.send(ctx, ch, pl, r)
}

func max64(a, b int) int64 {
	if a > b {
		return int64(a)
	}
	return int64(b)
}

// pickCharge picks the charge the worker reports.
func (p *chanPayer) pickCharge(amount uint64) uint64 {
	x := p.rng.IntN(100)
	switch {
	case x < chanZeroPercent:
		return 0
	case x < chanZeroPercent+chanFullPercent:
		return amount
	}
	return 1 + p.rng.Uint64N(amount)
}

// step makes one request on an open channel; false abandons the channel.
func (p *chanPayer) step(ctx context.Context, ch *openChannel) bool {
	x := p.rng.IntN(100)
	switch {
	case !ch.open || ch.charged+ch.amount > ch.balance:
		r := p.deposit(ctx, ch)
		return p.after(ctx, ch, r)
	case x < chanRefundPercent:
		return p.refund(ctx, ch)
	case x < chanRefundPercent+chanBurstPercent:
		return p.burst(ctx, ch)
	case x < chanRefundPercent+chanBurstPercent+chanStalePercent:
		behind := min(ch.charged, uint64(1+p.rng.IntN(chanStaleMaxSteps))*ch.amount)
		if behind == 0 {
			behind = ch.charged
		}
		r := p.voucher(ctx, ch, ch.charged-behind, p.pickCharge(ch.amount))
		return p.after(ctx, ch, r)
	case x < chanRefundPercent+chanBurstPercent+chanStalePercent+chanOverPercent:
		r := p.voucher(ctx, ch, ch.charged, ch.amount+1+p.rng.Uint64N(ch.amount))
		return p.after(ctx, ch, r)
	}
	r := p.voucher(ctx, ch, ch.charged, p.pickCharge(ch.amount))
	return p.after(ctx, ch, r)
}

// after paces the payer after an answer and decides whether to keep the
// channel.
func (p *chanPayer) after(ctx context.Context, ch *openChannel, r chanRecord) bool {
	switch {
	case r.Status == 0:
		sleepCtx(ctx, chanConnBackoff)
	case r.Outcome == outChanBusy:
		sleepCtx(ctx, chanBusyBackoff+time.Duration(p.rng.IntN(int(chanBusyBackoff))))
		return time.Since(ch.busySince) < chanBusyGiveUp
	}
	return true
}

// voucher sends a voucher for base+amount, asking the worker to report
// charge.
func (p *chanPayer) voucher(ctx context.Context, ch *openChannel, base, charge uint64) chanRecord {
	max := base + ch.amount
	pl, err := p.cl.VoucherPayload(ch.req, ch.cfg, max)
	r := chanRecord{Tenant: ch.tenant.Slug, Channel: ch.id, Payer: p.cl.Address(), Kind: channel.TypeVoucher, SignedMax: max, AskCharge: charge}
	if err != nil {
		r.Outcome, r.Err = outSignError, err.Error()
		p.t.log.add(r)
		return r
	}
	p.t.log.sign(ch.id, max)
	return p.send(ctx, ch, pl, r)
}

// burst sends one voucher 2-4 times at once: at most one may be charged
// unless the charge is zero (a zero charge leaves the voucher valid).
func (p *chanPayer) burst(ctx context.Context, ch *openChannel) bool {
	max := ch.charged + ch.amount
	pl, err := p.cl.VoucherPayload(ch.req, ch.cfg, max)
	if err != nil {
		return true
	}
	p.t.log.sign(ch.id, max)
	n := 2 + p.rng.IntN(chanBurstMax-1)
	charges := make([]uint64, n)
	paths := make([]string, n)
	for i := range charges {
		charges[i] = 1 + p.rng.Uint64N(ch.amount) // nonzero: each charge moves the cumulative amount
		paths[i] = p.path()
	}
	out := make([]chanRecord, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		wg.Go(func() {
			r := chanRecord{Tenant: ch.tenant.Slug, Channel: ch.id, Payer: p.cl.Address(), Kind: channel.TypeVoucher, Burst: true, SignedMax: max, AskCharge: charges[i]}
			// Each copy updates a private view; the payer adopts the
			// highest reported state afterwards.
			view := *ch
			r = p.sendTo(ctx, &view, pl, r, paths[i])
			mu.Lock()
			out[i] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	served := 0
	for _, r := range out {
		if r.HasState && r.Cumulative >= ch.charged {
			ch.charged, ch.balance = r.Cumulative, r.Balance
		}
		if r.Outcome == outChanCharged {
			served++
		}
	}
	if served > 1 {
		p.t.log.anomaly(ch.id, "one voucher for %d sent %d times at once was charged %d times", max, n, served)
	}
	for _, r := range out {
		if r.Status == 0 {
			sleepCtx(ctx, chanConnBackoff)
			break
		}
	}
	return true
}

// refund asks for part or all of the remainder back.
func (p *chanPayer) refund(ctx context.Context, ch *openChannel) bool {
	amount := ""
	if ch.balance > ch.charged && p.rng.IntN(chanRefundPart) == 0 {
		amount = strconv.FormatUint(1+p.rng.Uint64N(ch.balance-ch.charged), 10)
	}
	pl, err := p.cl.RefundPayload(ch.req, ch.cfg, ch.charged, amount)
	r := chanRecord{Tenant: ch.tenant.Slug, Channel: ch.id, Payer: p.cl.Address(), Kind: channel.TypeRefund, SignedMax: ch.charged}
	if err != nil {
		r.Outcome, r.Err = outSignError, err.Error()
		p.t.log.add(r)
		return true
	}
	p.t.log.sign(ch.id, ch.charged)
	r = p.send(ctx, ch, pl, r)
	return p.after(ctx, ch, r)
}

// send sends one payload on ch, records it, checks the answer from the
// client's side and updates ch from it.
func (p *chanPayer) send(ctx context.Context, ch *openChannel, pl *channel.Payload, r chanRecord) chanRecord {
	return p.sendTo(ctx, ch, pl, r, p.path())
}

// sendTo is send to a given path (bursts pick theirs before they fan out:
// the payer's rng is not safe for concurrent use).
func (p *chanPayer) sendTo(ctx context.Context, ch *openChannel, pl *channel.Payload, r chanRecord, path string) chanRecord {
	raw, err := json.Marshal(map[string]any{"x402Version": x402.Version2, "accepted": ch.req.V2(), "payload": pl})
	if err != nil {
		panic(err)
	}
	if pl.Type != channel.TypeRefund {
		path += "?" + chanQueryCharge + "=" + strconv.FormatUint(r.AskCharge, 10)
	}
	r.Start = time.Now()
	status, h, body, err := p.t.do(ctx, ch.tenant, path, base64.StdEncoding.EncodeToString(raw), p.cl.Address())
	p.t.observe(&r, status, h, body, err)
	if r.Outcome == outChanBusy {
		if ch.busySince.IsZero() {
			ch.busySince = r.Start
		}
	} else if r.Status != 0 {
		ch.busySince = time.Time{}
	}
	switch {
	case r.Outcome == outChanCharged || r.Outcome == outChanRefunded:
		p.checkPaid(ch, pl, &r)
		if pl.Type == channel.TypeDeposit {
			ch.open = true
		}
		ch.charged, ch.balance = r.Cumulative, r.Balance
	case r.Outcome == outChanCorrective:
		p.resync(ch, h, &r)
		// A deposit refused for its voucher still says the channel exists.
		if pl.Type == channel.TypeDeposit && r.Balance > 0 {
			ch.open = true
		}
	case r.Outcome == outChanNoReceipt:
		p.t.log.anomaly(ch.id, "%s answered %d without a channel PAYMENT-RESPONSE: %.200s", pl.Type, status, body)
	case status == http.StatusPaymentRequired && pl.Type == channel.TypeVoucher && strings.Contains(string(body), channel.ReasonMissingChannel):
		ch.open = false
	}
	p.t.log.add(r)
	return r
}

// checkPaid checks a successful answer against what was sent.
func (p *chanPayer) checkPaid(ch *openChannel, pl *channel.Payload, r *chanRecord) {
	switch pl.Type {
	case channel.TypeRefund:
		if r.Cumulative != ch.charged {
			p.t.log.anomaly(ch.id, "a refund moved chargedCumulativeAmount from %d to %d", ch.charged, r.Cumulative)
		}
		return
	}
	if r.Charged > ch.amount {
		p.t.log.anomaly(ch.id, "charged %d, above the per-request maximum %d", r.Charged, ch.amount)
	}
	if r.AskCharge <= ch.amount && r.Charged != r.AskCharge {
		p.t.log.anomaly(ch.id, "the worker reported %d, the gateway charged %d", r.AskCharge, r.Charged)
	}
	if r.Cumulative > r.SignedMax {
		p.t.log.anomaly(ch.id, "chargedCumulativeAmount %d is above the voucher signed for %d", r.Cumulative, r.SignedMax)
	}
	if r.Cumulative != r.SignedMax-ch.amount+r.Charged {
		p.t.log.anomaly(ch.id, "chargedCumulativeAmount %d after a charge of %d on a voucher for %d (max %d per request)", r.Cumulative, r.Charged, r.SignedMax, ch.amount)
	}
	if r.Cumulative > r.Balance {
		p.t.log.anomaly(ch.id, "chargedCumulativeAmount %d is above the balance %d", r.Cumulative, r.Balance)
	}
}

// resync adopts a corrective 402's channel state once its voucher proof is
// this payer's own.
func (p *chanPayer) resync(ch *openChannel, h http.Header, r *chanRecord) {
	req, ok := channelRequirement(h)
	if !ok {
		return
	}
	var extra struct {
		ChannelState channel.ChannelState `json:"channelState"`
		VoucherState channel.VoucherState `json:"voucherState"`
	}
	raw, _ := json.Marshal(req.Extra)
	if json.Unmarshal(raw, &extra) != nil || extra.ChannelState.ChargedCumulativeAmount == "" {
		p.t.log.anomaly(ch.id, "a corrective 402 without channelState")
		return
	}
	charged, err1 := strconv.ParseUint(extra.ChannelState.ChargedCumulativeAmount, 10, 64)
	balance, err2 := strconv.ParseUint(extra.ChannelState.Balance, 10, 64)
	if err1 != nil || err2 != nil {
		p.t.log.anomaly(ch.id, "corrective channelState with amounts %q, %q", extra.ChannelState.ChargedCumulativeAmount, extra.ChannelState.Balance)
		return
	}
	if charged > 0 || extra.VoucherState.Signature != "" {
		v := channel.Voucher{ChannelID: ch.id, MaxClaimableAmount: extra.VoucherState.SignedMaxClaimable, Signature: extra.VoucherState.Signature}
		signer, err := v.Signer(ch.chainID)
		if err != nil || !strings.EqualFold(signer, p.cl.Address()) {
			p.t.log.anomaly(ch.id, "corrective 402 for charged %d proves it with a voucher that is not the payer's (%v)", charged, err)
			return
		}
		signedMax, _ := strconv.ParseUint(extra.VoucherState.SignedMaxClaimable, 10, 64)
		if charged > signedMax {
			p.t.log.anomaly(ch.id, "corrective 402 claims %d charged, above the voucher it holds (%d)", charged, signedMax)
		}
	}
	r.Cumulative, r.Balance, r.HasState = charged, balance, true
	ch.charged, ch.balance = charged, balance
}

// channelRequirement returns the batch-settlement entry of a 402.
func channelRequirement(h http.Header) (x402.Requirement, bool) {
	pr, err := x402.DecodePaymentRequired(h.Get(x402.HeaderPaymentRequired))
	if err != nil {
		return x402.Requirement{}, false
	}
	for _, a := range pr.Accepts {
		if a.Scheme == channel.Name {
			return x402.RequirementFromV2(a, pr.Resource), true
		}
	}
	return x402.Requirement{}, false
}

// do sends one GET to a channel tenant as caller (the payer's address, so
// that per-caller rate limits apply per payer).
func (c *channelTraffic) do(ctx context.Context, t *tenantSpec, path, payment, caller string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, c.base+"/t/"+t.Slug+path, nil)
	if err != nil {
		panic(err)
	}
	if payment != "" {
		req.Header.Set(x402.HeaderPaymentSignature, payment)
	}
	req.Header.Set("X-Agent-Id", caller)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// observe classifies an answer into r and the run's observations.
func (c *channelTraffic) observe(r *chanRecord, status int, h http.Header, body []byte, err error) {
	r.End = time.Now()
	o := observation{Start: r.Start, End: r.End, Tenant: r.Tenant, Scenario: "channel_" + r.Kind, Paid: r.Kind != "challenge", Status: status}
	if err != nil {
		r.Outcome, r.Err = outConnError, err.Error()
		o.Outcome, o.Err = r.Outcome, r.Err
		c.rec.add(o)
		return
	}
	r.Status = status
	r.Outcome = classifyChannel(status, h, body, r)
	o.Outcome = r.Outcome
	c.rec.add(o)
}

// classifyChannel names a channel answer, filling r's charge and state
// from a 2xx's PAYMENT-RESPONSE.
func classifyChannel(status int, h http.Header, body []byte, r *chanRecord) string {
	switch {
	case status >= 200 && status < 300:
		sr, err := x402.DecodeSettleResponse(h.Get(x402.HeaderPaymentResponse))
		if err != nil || !sr.Success {
			return outChanNoReceipt
		}
		raw, _ := json.Marshal(sr.Extra[channel.ExtraChannelState])
		var cs channel.ChannelState
		if json.Unmarshal(raw, &cs) != nil || cs.ChargedCumulativeAmount == "" {
			return outChanNoReceipt
		}
		var err1, err2 error
		r.Cumulative, err1 = strconv.ParseUint(cs.ChargedCumulativeAmount, 10, 64)
		r.Balance, err2 = strconv.ParseUint(cs.Balance, 10, 64)
		if err1 != nil || err2 != nil || !strings.EqualFold(cs.ChannelID, r.Channel) {
			return outChanNoReceipt
		}
		r.HasState = true
		if r.Kind == channel.TypeRefund {
			r.Refunded, _ = strconv.ParseUint(sr.Amount, 10, 64)
			return outChanRefunded
		}
		v, _ := sr.Extra[channel.ExtraChargedAmount].(string)
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return outChanNoReceipt
		}
		r.Charged = n
		return outChanCharged
	case status == http.StatusPaymentRequired:
		if r.Kind == "challenge" {
			return outChallenge
		}
		if req, ok := channelRequirement(h); ok {
			if _, ok := req.Extra[channel.ExtraChannelState]; ok {
				return outChanCorrective
			}
		}
		return outChanRefused
	case status == http.StatusConflict:
		return outChanBusy
	}
	o, _ := classify(status, h, body, false)
	return o
}
