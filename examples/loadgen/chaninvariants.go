package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// Ledger statuses of channel entries (DESIGN section 15): a charge, a
// claim (Channel and Cumulative set) and a sweep of claimed funds.
const (
	statusCharged ledger.Status = "charged"
	statusClaimed ledger.Status = "claimed"
	statusSwept   ledger.Status = "swept"
)

// isChannelEntry reports whether e is a channel entry rather than a
// per-request settlement.
func isChannelEntry(e ledger.Entry) bool {
	return e.Status == statusCharged || e.Status == statusClaimed || e.Status == statusSwept
}

// chanInput is what the channel invariants are checked against.
type chanInput struct {
	// Entries are the ledger's channel entries (charged, claimed, swept)
	// of the run's tenants; LedgerRead says whether the ledger was read.
	Entries    []ledger.Entry
	LedgerRead bool
	// States is the gateway's KV state per channel (lower-case id);
	// StatesRead says whether the KV store could be read (StatesErr why
	// not).
	States     map[string]channel.State
	StatesRead bool
	StatesErr  string
	// ClaimerLeased says the claimer's lease was still taken after the
	// run: a pass a SIGKILL cut off holds it until its TTL runs out.
	ClaimerLeased bool
	// Escrow is the emulated escrow per channel; Swept the amount the
	// escrow settled per receiver|token (lower case).
	Escrow map[string]localfacilitator.EscrowChannel
	Swept  map[string]uint64
	// Facil are the batch-settlement settle calls the escrow executed.
	Facil []chanSettleRecord
	// What the payers did and saw.
	Records   []chanRecord
	Signed    map[string]map[uint64]bool
	Channels  map[string]chanInfo
	Anomalies []chanAnomaly
	// Kills are the SIGKILL windows; StrictCrash makes a claim whose
	// answer a SIGKILL or a facilitator timeout cut off, and that is not
	// recorded yet, a breach rather than a warning.
	Kills       []killWindow
	StrictCrash bool
}

// lostAnswer reports whether the escrow executed f but the gateway may
// never have heard of it: the answer was withheld (a timeout fault), or a
// SIGKILL came after the call began (the escrow goes on executing a call
// whose caller died) and at most cutOffWindow after it was executed.
func (in chanInput) lostAnswer(f chanSettleRecord) bool {
	if !f.Answered {
		return true
	}
	start := f.Start
	if start.IsZero() {
		start = f.Time
	}
	for _, k := range in.Kills {
		if !k.Killed.Before(start) && k.Killed.Sub(f.Time) <= cutOffWindow {
			return true
		}
	}
	return false
}

// cutOffWindow is how long after the escrow executed a claim or refund a
// SIGKILL may still have kept the gateway from recording it.
const cutOffWindow = 5 * time.Second

func atoiU(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// byChannel groups entries of one status by channel, sorted by their
// cumulative amount.
func byChannel(es []ledger.Entry, status ledger.Status) map[string][]ledger.Entry {
	out := map[string][]ledger.Entry{}
	for _, e := range es {
		if e.Status == status {
			id := strings.ToLower(e.Channel)
			out[id] = append(out[id], e)
		}
	}
	for _, xs := range out {
		sort.SliceStable(xs, func(i, j int) bool {
			a, _ := atoiU(xs[i].Cumulative)
			b, _ := atoiU(xs[j].Cumulative)
			return a < b
		})
	}
	return out
}

// chain walks entries sorted by Cumulative and reports each break of
// "cumulative = previous cumulative + amount", returning the sum of the
// amounts.
func chain(c *checkResult, what, id string, es []ledger.Entry) uint64 {
	var prev, sum uint64
	for _, e := range es {
		a, ok1 := atoiU(e.AmountAtomic)
		cum, ok2 := atoiU(e.Cumulative)
		if !ok1 || !ok2 {
			c.breach("channel %s: %s entry %s has amount %q, cumulative %q", short(id), what, e.IdempotencyKey, e.AmountAtomic, e.Cumulative)
			continue
		}
		if cum != prev+a {
			c.breach("channel %s: %s entry %s (amount %d) brings the cumulative amount from %d to %d: a gap, an overlap or a repeat", short(id), what, e.IdempotencyKey, a, prev, cum)
		}
		prev, sum = cum, sum+a
	}
	return sum
}

func short(id string) string {
	if len(id) > 14 {
		return id[:10] + ".." + id[len(id)-4:]
	}
	return id
}

// channelIDs returns every channel the run knows of: opened by a payer,
// in the ledger, in the KV state or in the escrow.
func (in chanInput) channelIDs() []string {
	set := map[string]bool{}
	for id := range in.Channels {
		set[strings.ToLower(id)] = true
	}
	for _, e := range in.Entries {
		if e.Channel != "" {
			set[strings.ToLower(e.Channel)] = true
		}
	}
	for id := range in.States {
		set[id] = true
	}
	for id := range in.Escrow {
		set[id] = true
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// checkChannels checks the money invariants of the channel traffic.
func checkChannels(in chanInput) []checkResult {
	var out []checkResult
	add := func(c checkResult) {
		if c.Skipped == "" {
			c.OK = len(c.Breaches) == 0
		}
		out = append(out, c)
	}
	charges := byChannel(in.Entries, statusCharged)
	claims := byChannel(in.Entries, statusClaimed)
	ids := in.channelIDs()
	noLedger := "the ledger cannot be read from this store"
	noKV := "the channel state cannot be read from the KV store: " + in.StatesErr

	// 1. Per channel, the charge entries chain up (each cumulative is the
	// previous one plus its amount) to chargedCumulativeAmount.
	c := checkResult{Name: "channels: Σ charge entries = chargedCumulativeAmount (KV), chained without gap or repeat"}
	switch {
	case !in.LedgerRead:
		c.Skipped = noLedger
	case !in.StatesRead:
		c.Skipped = noKV
	default:
		n, total, open := 0, uint64(0), 0
		for _, id := range ids {
			es := charges[id]
			sum := chain(&c, "charge", id, es)
			st, ok := in.States[id]
			if !ok {
				if len(es) > 0 {
					c.breach("channel %s: %d charge entries (Σ %d) but no channel state in the KV store", short(id), len(es), sum)
				}
				continue
			}
			open++
			n += len(es)
			total += sum
			if sum != st.Charged {
				c.breach("channel %s: Σ charge entries = %d (%d entries), chargedCumulativeAmount = %d", short(id), sum, len(es), st.Charged)
			}
		}
		c.Detail = fmt.Sprintf("%d channels with state, %d charge entries, %d atomic units charged", open, n, total)
	}
	add(c)

	// 2. Charged >= claimed, on every side.
	c = checkResult{Name: "channels: chargedCumulativeAmount >= claimed (KV claimedUpTo, escrow totalClaimed, claim entries)"}
	if !in.StatesRead {
		c.Skipped = noKV
	} else {
		var charged, claimed uint64
		for _, id := range ids {
			st, ok := in.States[id]
			esc := in.Escrow[id]
			if !ok {
				if esc.TotalClaimed > 0 {
					c.breach("channel %s: the escrow has %d claimed but the gateway has no state for it", short(id), esc.TotalClaimed)
				}
				continue
			}
			charged += st.Charged
			claimed += esc.TotalClaimed
			if st.ClaimedUpTo > st.Charged {
				c.breach("channel %s: claimedUpTo %d > chargedCumulativeAmount %d", short(id), st.ClaimedUpTo, st.Charged)
			}
			if esc.TotalClaimed > st.Charged {
				c.breach("channel %s: the escrow's totalClaimed %d > chargedCumulativeAmount %d", short(id), esc.TotalClaimed, st.Charged)
			}
			if es := claims[id]; len(es) > 0 {
				if top, _ := atoiU(es[len(es)-1].Cumulative); top > st.Charged {
					c.breach("channel %s: a claim entry reaches %d > chargedCumulativeAmount %d", short(id), top, st.Charged)
				}
			}
		}
		c.Detail = fmt.Sprintf("%d charged, %d claimed in the escrow", charged, claimed)
	}
	add(c)

	// 3. No charge beyond the voucher the payer signed, nor beyond the
	// deposit.
	c = checkResult{Name: "channels: no charge beyond the signed voucher or the deposit"}
	if !in.LedgerRead && !in.StatesRead {
		c.Skipped = noLedger
	} else {
		deposited := map[string]uint64{}
		for _, f := range in.Facil {
			if f.Type == channel.TypeDeposit {
				a, _ := atoiU(f.Amount)
				deposited[f.Channel] += a
			}
		}
		checked := 0
		for _, id := range ids {
			info, known := in.Channels[id]
			for _, e := range charges[id] {
				checked++
				a, _ := atoiU(e.AmountAtomic)
				cum, _ := atoiU(e.Cumulative)
				if !known {
					c.breach("channel %s: charge %s on a channel no payer opened", short(id), e.IdempotencyKey)
					continue
				}
				if a > info.Amount {
					c.breach("channel %s: charge %s of %d is above the per-request maximum %d", short(id), e.IdempotencyKey, a, info.Amount)
				}
				if cum < a || !in.Signed[id][cum-a+info.Amount] {
					c.breach("channel %s: charge %s (%d, cumulative %d) has no voucher for %d signed by the payer", short(id), e.IdempotencyKey, a, cum, cum-a+info.Amount)
				}
			}
			st, ok := in.States[id]
			if !ok {
				continue
			}
			esc := in.Escrow[id]
			if st.Charged > st.SignedMax {
				c.breach("channel %s: chargedCumulativeAmount %d > the stored voucher's %d", short(id), st.Charged, st.SignedMax)
			}
			if st.Charged > 0 {
				if known && !in.Signed[id][st.SignedMax] {
					c.breach("channel %s: the stored voucher for %d is not one the payer signed", short(id), st.SignedMax)
				}
				v := channel.Voucher{ChannelID: id, MaxClaimableAmount: strconv.FormatUint(st.SignedMax, 10), Signature: st.Signature}
				chainID, _ := x402.EVMChainID(st.Network)
				if signer, err := v.Signer(chainID); err != nil || !strings.EqualFold(signer, st.Config.PayerAuthorizer) {
					c.breach("channel %s: the stored voucher's signature does not recover to the payer authorizer (%v)", short(id), err)
				}
			}
			if st.Charged > esc.Balance {
				c.breach("channel %s: chargedCumulativeAmount %d > the escrow balance %d", short(id), st.Charged, esc.Balance)
			}
			if st.Charged > deposited[id] {
				c.breach("channel %s: chargedCumulativeAmount %d > the %d deposited", short(id), st.Charged, deposited[id])
			}
			if st.Balance > esc.Balance {
				c.warn("channel %s: the gateway's mirrored balance %d is above the escrow's %d (a refund or deposit answer it missed)", short(id), st.Balance, esc.Balance)
			}
		}
		c.Detail = fmt.Sprintf("%d charges against %d channels' vouchers and deposits", checked, len(ids))
	}
	add(c)

	// 4. Nothing claimed twice and no claim lost: per channel the claim
	// entries chain up to the escrow's totalClaimed; sweeps add up to what
	// the escrow settled.
	c = checkResult{Name: "channels: Σ claim entries = escrow totalClaimed (nothing claimed twice), Σ sweeps = escrow settled"}
	if !in.LedgerRead {
		c.Skipped = noLedger
	} else {
		claimTx := map[string]map[string]uint64{} // tx -> channel -> total
		sweepTx := map[string]string{}
		for _, f := range in.Facil {
			if f.Claims != nil {
				claimTx[strings.ToLower(f.TxHash)] = f.Claims
			}
			if f.Type == channel.TypeSettle {
				sweepTx[strings.ToLower(f.TxHash)] = f.Amount
			}
		}
		n, total := 0, uint64(0)
		for _, id := range ids {
			es := claims[id]
			sum := chain(&c, "claim", id, es)
			n += len(es)
			total += sum
			esc := in.Escrow[id]
			switch {
			case sum > esc.TotalClaimed:
				c.breach("channel %s: Σ claim entries = %d (%d entries) > the escrow's totalClaimed = %d: claimed twice", short(id), sum, len(es), esc.TotalClaimed)
			case sum < esc.TotalClaimed:
				// The escrow claimed more than the ledger says: fine only
				// while the answer of that claim (or refund) was lost, as
				// the claimer records it when it next claims the channel.
				recorded := map[string]bool{}
				for _, e := range es {
					recorded[strings.ToLower(e.TxHash)] = true
				}
				var lost *chanSettleRecord
				for i, f := range in.Facil {
					if _, ok := f.Claims[id]; ok && !recorded[strings.ToLower(f.TxHash)] && in.lostAnswer(f) {
						lost = &in.Facil[i]
					}
				}
				if lost == nil || in.StrictCrash {
					c.breach("channel %s: Σ claim entries = %d (%d entries), the escrow's totalClaimed = %d: a claim not recorded", short(id), sum, len(es), esc.TotalClaimed)
				} else {
					c.warn("channel %s: Σ claim entries = %d, the escrow's totalClaimed = %d: the %s %s at %s had its answer cut off (not recorded yet)",
						short(id), sum, esc.TotalClaimed, lost.Type, lost.TxHash, lost.Time.Format("15:04:05.000"))
				}
			}
			for _, e := range es {
				cum, _ := atoiU(e.Cumulative)
				if got, ok := claimTx[strings.ToLower(e.TxHash)][id]; !ok || got != cum {
					c.breach("channel %s: claim entry %s (total %d, tx %s) matches no escrow claim of that total", short(id), e.IdempotencyKey, cum, e.TxHash)
				}
			}
		}
		swept := map[string]uint64{}
		sweeps := 0
		for _, e := range in.Entries {
			if e.Status != statusSwept {
				continue
			}
			sweeps++
			a, _ := atoiU(e.AmountAtomic)
			swept[strings.ToLower(e.PayTo)+"|"+strings.ToLower(e.Asset)] += a
			if amt, ok := sweepTx[strings.ToLower(e.TxHash)]; !ok || amt != e.AmountAtomic {
				c.breach("sweep entry %s (%s, tx %s) matches no escrow settle of that amount", e.IdempotencyKey, e.AmountAtomic, e.TxHash)
			}
		}
		sweptTx := map[string]bool{}
		for _, e := range in.Entries {
			if e.Status == statusSwept {
				sweptTx[strings.ToLower(e.TxHash)] = true
			}
		}
		var lostSweeps []string
		var lostAmount uint64
		for _, f := range in.Facil {
			tx := strings.ToLower(f.TxHash)
			if _, ok := sweepTx[tx]; ok && f.Type == channel.TypeSettle && !sweptTx[tx] && in.lostAnswer(f) {
				lostSweeps = append(lostSweeps, fmt.Sprintf("%s of %s at %s", f.TxHash, f.Amount, f.Time.Format("15:04:05.000")))
				a, _ := atoiU(f.Amount)
				lostAmount += a
			}
		}
		// A sweep whose answer was cut off is never learnt later (the
		// next settle finds nothing left to sweep): a documented loss of
		// the sweep's ledger entry, not of money. Sweep entries short of
		// the escrow by exactly the cut-off sweeps are a warning (a breach
		// with -strict-crash); anything else is a breach.
		var short uint64
		var mismatches []string
		over := false
		for pair, want := range in.Swept {
			if swept[pair] != want {
				mismatches = append(mismatches, fmt.Sprintf("receiver|token %s: Σ sweep entries = %d, the escrow settled %d", pair, swept[pair], want))
			}
			if swept[pair] > want {
				over = true
			} else {
				short += want - swept[pair]
			}
		}
		for pair, got := range swept {
			if _, ok := in.Swept[pair]; !ok && got > 0 {
				over = true
				mismatches = append(mismatches, fmt.Sprintf("receiver|token %s: Σ sweep entries = %d, the escrow settled nothing", pair, got))
			}
		}
		if len(mismatches) > 0 {
			msg := strings.Join(mismatches, "; ")
			if len(lostSweeps) > 0 {
				msg += "; sweeps whose answer a timeout or SIGKILL cut off: " + strings.Join(lostSweeps, ", ")
			}
			if over || short != lostAmount || in.StrictCrash {
				c.breach("%s", msg)
			} else {
				c.warn("%s (exactly the cut-off sweeps: their entries are lost, the money is in the escrow's settled total)", msg)
			}
		}
		c.Detail = fmt.Sprintf("%d claim entries (%d claimed), %d sweep entries", n, total, sweeps)
	}
	add(c)

	// 5. The payers' view: every charged answer is a charge entry (same
	// channel, cumulative and amount), every charge entry is an answer a
	// payer got or a request cut off, and nothing a payer checked on the
	// spot went wrong.
	c = checkResult{Name: "channels: every charged answer a payer got is a charge entry, and the reverse"}
	if !in.LedgerRead {
		c.Skipped = noLedger
	} else {
		type key struct {
			id  string
			cum uint64
		}
		entryAt := map[key]uint64{}
		for id, es := range charges {
			for _, e := range es {
				cum, _ := atoiU(e.Cumulative)
				a, _ := atoiU(e.AmountAtomic)
				entryAt[key{id, cum}] = a
			}
		}
		seen := map[key]bool{}
		cutOff := map[string]int{}
		answers := 0
		for _, r := range in.Records {
			id := strings.ToLower(r.Channel)
			switch {
			case r.Outcome == outConnError && r.Kind != "challenge":
				cutOff[id]++
			case r.Outcome == outChanCharged && r.Charged > 0:
				answers++
				k := key{id, r.Cumulative}
				a, ok := entryAt[k]
				switch {
				case !ok:
					c.breach("channel %s: a %s answered with a charge of %d (cumulative %d) that has no charge entry", short(id), r.Kind, r.Charged, r.Cumulative)
				case a != r.Charged:
					c.breach("channel %s: the answer at cumulative %d says %d charged, the entry %d", short(id), r.Cumulative, r.Charged, a)
				}
				seen[k] = true
			}
		}
		unseen := map[string]int{}
		for k := range entryAt {
			if !seen[k] {
				unseen[k.id]++
			}
		}
		for id, n := range unseen {
			if n > cutOff[id] {
				c.breach("channel %s: %d charge entries no payer got an answer for, and only %d requests cut off", short(id), n, cutOff[id])
			} else {
				c.warn("channel %s: %d charges whose answers were lost to a cut-off request (charged, served, not delivered)", short(id), n)
			}
		}
		for _, a := range in.Anomalies {
			c.breach("channel %s: %s", short(a.Channel), a.What)
		}
		c.Detail = fmt.Sprintf("%d charged answers, %d charge entries", answers, len(entryAt))
	}
	add(c)

	// 6. Liveness: after the claim wait, with the facilitator's faults
	// off, every charge is claimed, except on channels a request cut off
	// by a SIGKILL or a transport error may still hold (its lease
	// outlives the process).
	c = checkResult{Name: "channels: everything charged is claimed after the claim wait (channels a cut-off request may hold excepted)"}
	switch {
	case !in.StatesRead:
		c.Skipped = noKV
	case in.ClaimerLeased:
		c.Skipped = "the claimer's lease is still taken, by a pass a SIGKILL cut off: nothing is claimed until it lapses"
	default:
		held := map[string]bool{}
		for _, r := range in.Records {
			if r.Outcome == outConnError && r.Channel != "" {
				held[strings.ToLower(r.Channel)] = true
			}
		}
		for _, f := range in.Facil {
			if f.Type == channel.TypeRefund && in.lostAnswer(f) {
				held[f.Channel] = true
			}
		}
		checked, excepted := 0, 0
		for _, id := range ids {
			st, ok := in.States[id]
			if !ok || st.Charged == 0 {
				continue
			}
			if held[id] {
				excepted++
				continue
			}
			checked++
			if got := in.Escrow[id].TotalClaimed; got < st.Charged {
				c.breach("channel %s: %d charged, %d claimed in the escrow after the claim wait", short(id), st.Charged, got)
			}
		}
		c.Detail = fmt.Sprintf("%d channels checked, %d excepted", checked, excepted)
	}
	add(c)
	return out
}

// channelInput gathers what checkChannels needs once the gateway has
// stopped: the payers' log, the escrow's state of every channel, and the
// gateway's channel state from its KV store.
func channelInput(ctx context.Context, t *channelTraffic, fac *faultyFacilitator, kvURL string, entries []ledger.Entry, ledgerRead bool, kills []killWindow, strict bool, out io.Writer) chanInput {
	in := chanInput{Entries: entries, LedgerRead: ledgerRead, Facil: fac.ChannelSettles(), Kills: kills, StrictCrash: strict}
	in.Records, in.Signed, in.Channels, in.Anomalies = t.log.snapshot()
	ids := in.channelIDs()
	for _, f := range in.Facil {
		for id := range f.Claims {
			ids = append(ids, id)
		}
		if f.Channel != "" {
			ids = append(ids, f.Channel)
		}
	}
	esc := fac.lf.Escrow()
	in.Escrow = map[string]localfacilitator.EscrowChannel{}
	for _, id := range ids {
		if ch, ok := esc.Channel(id); ok {
			in.Escrow[strings.ToLower(id)] = ch
		}
	}
	in.Swept = map[string]uint64{}
	for _, info := range in.Channels {
		pair := strings.ToLower(info.Receiver) + "|" + strings.ToLower(info.Token)
		in.Swept[pair] = esc.Settled(info.Receiver, info.Token)
	}
	states, leased, err := readChannelStates(ctx, kvURL, fac.lf.Address(), in.channelIDs())
	if err != nil {
		in.StatesErr = err.Error()
	} else {
		in.States, in.StatesRead, in.ClaimerLeased = states, true, leased
	}
	n := map[string]int{}
	for _, r := range in.Records {
		n[r.Kind+" "+r.Outcome]++
		if r.Burst {
			n["burst"]++
		}
		switch r.Outcome {
		case outChanCorrective, outChanBusy:
			n[r.Outcome]++
		}
	}
	fmt.Fprintf(out, "\nchannel traffic: %d deposits taken, %d vouchers charged, %d refunds, %d corrective 402s (state adopted), %d 409 busy, %d burst copies\n",
		n[channel.TypeDeposit+" "+outChanCharged], n[channel.TypeVoucher+" "+outChanCharged], n[channel.TypeRefund+" "+outChanRefunded],
		n[outChanCorrective], n[outChanBusy], n["burst"])
	var charged, claimed uint64
	for _, st := range states {
		charged += st.Charged
	}
	for _, ch := range in.Escrow {
		claimed += ch.TotalClaimed
	}
	fmt.Fprintf(out, "channels: %d tried, %d requests, %d with gateway state, %d ledger entries; %d charged, %d claimed\n",
		len(in.Channels), len(in.Records), len(states), len(entries), charged, claimed)
	return in
}
