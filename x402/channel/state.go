package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/402claw/dispatcher/kv"
)

// Sentinel errors of the channel state.
var (
	// ErrNotFound means there is no state for the channel.
	ErrNotFound = errors.New("channel: no such channel")
	// ErrFenced means another holder wrote the channel's state since this
	// one read it (its lease had lapsed): nothing was written.
	ErrFenced = errors.New("channel: state changed under a stale holder")
	// ErrBusy is wrapped by BusyError.
	ErrBusy = errors.New("channel: busy")
	// ErrCorrupt means a stored record does not decode.
	ErrCorrupt = errors.New("channel: corrupt state record")
)

// State is one channel's server-side state, as the specification lists it.
// Amounts are atomic units; uint64 covers every real token supply.
type State struct {
	// ChannelID is the channel id (0x-prefixed lower-case hex).
	ChannelID string `json:"channelId"`
	// Network is the CAIP-2 network.
	Network string `json:"network"`
	// Config is the channel's configuration.
	Config ChannelConfig `json:"channelConfig"`
	// Charged is chargedCumulativeAmount: the sum of committed charges.
	Charged uint64 `json:"chargedCumulativeAmount,string"`
	// SignedMax and Signature are the latest voucher the client signed.
	SignedMax uint64 `json:"signedMaxClaimable,string"`
	Signature string `json:"signature,omitempty"`
	// Balance, TotalClaimed, WithdrawRequestedAt and RefundNonce mirror
	// the escrow contract.
	Balance             uint64 `json:"balance,string"`
	TotalClaimed        uint64 `json:"totalClaimed,string"`
	WithdrawRequestedAt int64  `json:"withdrawRequestedAt"`
	RefundNonce         uint64 `json:"refundNonce,string"`
	// ClaimedUpTo is the cumulative amount this gateway's claims have
	// reached; a claim asks for Charged and is a no-op at or below it.
	ClaimedUpTo uint64 `json:"claimedUpTo,string"`
	// SyncedAt is when the mirrored fields were last refreshed from the
	// facilitator (Unix milliseconds).
	SyncedAt int64 `json:"onchainSyncedAt"`
	// LastRequest is when the last paid request committed (Unix ms).
	LastRequest int64 `json:"lastRequestTimestamp"`
	// UnclaimedSince is when the oldest unclaimed charge was committed
	// (Unix ms), 0 when everything charged is claimed: the claimer's
	// Interval runs from it, so steady traffic cannot postpone a claim.
	UnclaimedSince int64 `json:"unclaimedSince,omitempty"`
	// Tenant is the tenant the channel was opened for.
	Tenant string `json:"tenant,omitempty"`
	// Queued says the channel is in the claim queue.
	Queued bool `json:"queued,omitempty"`
	// LastCharge is the last committed charge and LastClaim the last
	// claim, kept in the same write as the amounts they move so that
	// their journal entries can be recorded again (same Key) when the
	// first Record may not have happened: a crash between the state write
	// and the journal, or a journal failure. They are shared between
	// copies of a State (the service keeps decoded states): treat them
	// as read-only and replace them rather than change them.
	LastCharge *Movement `json:"lastCharge,omitempty"`
	LastClaim  *Movement `json:"lastClaim,omitempty"`
	// HeldAt is when the request or claimer that wrote this version took
	// the channel's lease (Unix ms). A later holder that finds it at least
	// half a lease old may have taken over from a crashed writer, and
	// records the last movements again.
	HeldAt int64 `json:"heldAt,omitempty"`
	// Unjournaled says a journal Record of this version's movements
	// failed: the next holder records them again.
	Unjournaled bool `json:"unjournaled,omitempty"`
}

// Movement is a charge or claim as the channel state remembers it, enough
// to rebuild its journal Entry.
type Movement struct {
	// Key is the Entry's Key, deterministic: "charge:<channel>:<cumulative>"
	// or "claim:<channel>:<claimed total>".
	Key string `json:"key"`
	// Amount and Cumulative are the Entry's.
	Amount     uint64 `json:"amount,string"`
	Cumulative uint64 `json:"cumulative,string"`
	// Transaction is the claim's transaction ("" for a charge).
	Transaction string `json:"transaction,omitempty"`
	// Time is when it happened (Unix ms).
	Time int64 `json:"time"`
	// RequestID and Resource are the charged request's.
	RequestID string `json:"requestId,omitempty"`
	Resource  string `json:"resource,omitempty"`
	// Tenant is the tenant that served the charged request ("" for a
	// claim, which is the channel's: State.Tenant).
	Tenant string `json:"tenant,omitempty"`
}

// ChargeKey is the journal Key of the charge that brought a channel's
// chargedCumulativeAmount to cumulative.
func ChargeKey(channelID string, cumulative uint64) string {
	return "charge:" + channelID + ":" + strconv.FormatUint(cumulative, 10)
}

// ClaimKey is the journal Key of the claim that brought a channel's
// claimed total to cumulative.
func ClaimKey(channelID string, cumulative uint64) string {
	return "claim:" + channelID + ":" + strconv.FormatUint(cumulative, 10)
}

// entry rebuilds the journal Entry of m, a movement of status on the
// channel of s.
func (s *State) entry(status string, m *Movement) Entry {
	tenant := s.Tenant
	if m.Tenant != "" {
		tenant = m.Tenant
	}
	return Entry{
		Key: m.Key, Status: status, ChannelID: s.ChannelID,
		Network: s.Network, Payer: s.Config.Payer, Receiver: s.Config.Receiver, Token: s.Config.Token,
		Amount: m.Amount, Cumulative: m.Cumulative, Transaction: m.Transaction, Time: time.UnixMilli(m.Time).UTC(),
		Tenant: tenant, RequestID: m.RequestID, Resource: m.Resource,
	}
}

// Unclaimed returns the charged amount not yet claimed.
func (s *State) Unclaimed() uint64 {
	if s.Charged <= s.ClaimedUpTo {
		return 0
	}
	return s.Charged - s.ClaimedUpTo
}

// Snapshot returns the wire channelState of s.
func (s *State) Snapshot() ChannelState {
	return ChannelState{
		ChannelID:               s.ChannelID,
		Balance:                 strconv.FormatUint(s.Balance, 10),
		TotalClaimed:            strconv.FormatUint(s.TotalClaimed, 10),
		WithdrawRequestedAt:     s.WithdrawRequestedAt,
		RefundNonce:             strconv.FormatUint(s.RefundNonce, 10),
		ChargedCumulativeAmount: strconv.FormatUint(s.Charged, 10),
	}
}

// VoucherState returns the wire voucherState of s.
func (s *State) VoucherState() VoucherState {
	return VoucherState{SignedMaxClaimable: strconv.FormatUint(s.SignedMax, 10), Signature: s.Signature}
}

// store keeps channel state in a kv.Store as an append-only chain of
// versions: record n+1 is written with SetNX, so of two writers that both
// read version n exactly one wins (the version is the fencing token), and
// a head counter, only ever raised, lets readers find the latest version
// with one probe. Records two versions behind the head are deleted.
type store struct {
	kv     kv.Store
	prefix string
	// decoded remembers the last record read or written per channel, so
	// that reading the same bytes again skips their decoding.
	decoded *decodedStates
}

// decodedStates maps channel ids to their last record and its decoding.
// A State's Movements are never modified in place (a new one replaces
// them), so sharing them between copies is safe.
type decodedStates struct {
	mu sync.Mutex
	m  map[string]decodedState
}

type decodedState struct {
	raw []byte
	st  State
}

// maxDecodedStates bounds decodedStates; past it the map starts over.
const maxDecodedStates = 4096

func (d *decodedStates) get(id string, raw []byte) (State, bool) {
	if d == nil {
		return State{}, false
	}
	d.mu.Lock()
	e, ok := d.m[id]
	d.mu.Unlock()
	if !ok || !bytes.Equal(e.raw, raw) {
		return State{}, false
	}
	return e.st, true
}

func (d *decodedStates) put(id string, raw []byte, st State) {
	if d == nil {
		return
	}
	d.mu.Lock()
	if len(d.m) >= maxDecodedStates {
		clear(d.m)
	}
	d.m[id] = decodedState{raw: raw, st: st}
	d.mu.Unlock()
}

func (s store) headKey(id string) string  { return s.prefix + id + ":head" }
func (s store) leaseKey(id string) string { return s.prefix + id + ":lease" }
func (s store) recKey(id string, v uint64) string {
	return s.prefix + id + ":v:" + strconv.FormatUint(v, 10)
}

// load returns the latest state of a channel and its version, or
// ErrNotFound.
func (s store) load(ctx context.Context, id string) (State, uint64, error) {
	for attempt := 0; attempt < 8; attempt++ {
		var head uint64
		raw, err := s.kv.Get(ctx, s.headKey(id))
		switch {
		case errors.Is(err, kv.ErrNotFound):
		case err != nil:
			return State{}, 0, fmt.Errorf("channel: read head: %w", err)
		default:
			if head, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
				return State{}, 0, fmt.Errorf("%w: head %q", ErrCorrupt, raw)
			}
		}
		// The head may lag a writer that won SetNX but has not raised it
		// yet: probe forward.
		var rec []byte
		for {
			next, err := s.kv.Get(ctx, s.recKey(id, head+1))
			if errors.Is(err, kv.ErrNotFound) {
				break
			}
			if err != nil {
				return State{}, 0, fmt.Errorf("channel: read state: %w", err)
			}
			head++
			rec = next
		}
		if head == 0 {
			return State{}, 0, ErrNotFound
		}
		if rec == nil {
			rec, err = s.kv.Get(ctx, s.recKey(id, head))
			if errors.Is(err, kv.ErrNotFound) {
				continue // pruned under a stale head: read the head again
			}
			if err != nil {
				return State{}, 0, fmt.Errorf("channel: read state: %w", err)
			}
		}
		if st, ok := s.decoded.get(id, rec); ok {
			return st, head, nil
		}
		var st State
		if err := json.Unmarshal(rec, &st); err != nil {
			return State{}, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		s.decoded.put(id, rec, st)
		return st, head, nil
	}
	return State{}, 0, fmt.Errorf("channel: state of %s kept moving while read", id)
}

// put writes st as version base+1; ErrFenced when that version exists.
func (s store) put(ctx context.Context, st State, base uint64) error {
	rec, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ok, err := s.kv.SetNX(ctx, s.recKey(st.ChannelID, base+1), rec, 0)
	if err != nil {
		return fmt.Errorf("channel: write state: %w", err)
	}
	if !ok {
		return ErrFenced
	}
	s.decoded.put(st.ChannelID, rec, st)
	// Raise the head to base+1 unless it is there already; readers probe
	// past a lagging head, so a failure here loses nothing. Old records
	// are pruned only once the head is known to be past them, so a head
	// left behind (a crash, a failed raise) always has a record after it.
	head, ok, err := s.kv.Incr(ctx, s.headKey(st.ChannelID), kv.Increment{Delta: 1, Floor: int64(base), Max: int64(base + 1)})
	if err == nil && (ok || head >= int64(base+1)) && base >= 2 {
		_ = s.kv.Delete(ctx, s.recKey(st.ChannelID, base-1))
	}
	return nil
}

// leaseTokens makes lease tokens unique across processes (a random
// prefix) and within one (a counter), without a store round trip.
var (
	leaseTokenPrefix = RandomSalt()[2:18] + "-"
	leaseTokenSeq    atomic.Uint64
)

// lease takes the channel's lease for ttl and returns its token, or a
// *BusyError. The token only tells the holder's release from another's:
// the fencing of state writes is the version chain's.
func (s store) lease(ctx context.Context, id string, ttl time.Duration) (string, error) {
	token := leaseTokenPrefix + strconv.FormatUint(leaseTokenSeq.Add(1), 36)
	ok, err := s.kv.SetNX(ctx, s.leaseKey(id), []byte(token), ttl)
	if err != nil {
		return "", fmt.Errorf("channel: lease: %w", err)
	}
	if !ok {
		return "", &BusyError{ChannelID: id}
	}
	return token, nil
}

// release drops the lease if it is still token's.
func (s store) release(ctx context.Context, id, token string) error {
	raw, err := s.kv.Get(ctx, s.leaseKey(id))
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if string(raw) != token {
		return nil
	}
	return s.kv.Delete(ctx, s.leaseKey(id))
}

// BusyError means another request holds the channel (HTTP 409,
// ReasonChannelBusy). It wraps ErrBusy.
type BusyError struct {
	// ChannelID is the busy channel.
	ChannelID string
}

// Error describes the refusal.
func (e *BusyError) Error() string {
	return "channel: " + e.ChannelID + " is busy with another request (" + ReasonChannelBusy + ")"
}

// Unwrap returns ErrBusy.
func (e *BusyError) Unwrap() error { return ErrBusy }
