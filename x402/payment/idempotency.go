package payment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
)

// Idempotency records live in the KV store:
//
//	x402:{<slug>}:key:<idempotency key>  the record (JSON), per tenant
//	x402:auth:<authorization id>         "<slug> <idempotency key>" owning it
//	x402:outcome:<ledger entry id>       a failed settlement's outcome
//
// The authorization record is global, not per tenant: one signed
// authorization can be spent once, so it may buy one request of one tenant
// (two paid tenants with the same payTo and price must not both run their
// workers for it).
//
// A record is written "in flight" with SetNX when a request claims its key,
// replaced by "done" (with the answer to replay) or "pending" after
// settlement, and deleted when the request fails before settlement.

const (
	stateInFlight = "in_flight"
	stateDone     = "done"
	statePending  = "pending"
)

type record struct {
	State       string      `json:"state"`
	Fingerprint string      `json:"fingerprint"`
	Key         string      `json:"key"`
	Status      int         `json:"status,omitempty"`
	Header      http.Header `json:"header,omitempty"`
	Body        []byte      `json:"body,omitempty"`
	Outcome     *outcome    `json:"outcome,omitempty"`
}

// outcome is what the facilitator answered for a settlement, kept before
// the ledger entry is written so that Recover books the true status.
type outcome struct {
	EntryID uuid.UUID     `json:"entryId"`
	Status  ledger.Status `json:"status"`
	TxHash  string        `json:"txHash,omitempty"`
}

type claim struct {
	s               *Stage
	key, fp         string
	keyKey, authKey string
	authVal         []byte
	ownAuth         bool
}

func recordKey(slug, key string) string { return "x402:{" + slug + "}:key:" + key }
func authKey(id string) string          { return "x402:auth:" + id }
func outcomeKey(id uuid.UUID) string    { return "x402:outcome:" + id.String() }

// outcomeTTL is how long a failed settlement's outcome is kept for Recover.
const outcomeTTL = 7 * 24 * time.Hour

// claim takes the idempotency key (and the authorization) for this request.
// It returns a replayed answer, or an error for 409/422, when another
// request holds or used them.
//
// The authorization record is claimed whatever the key's source, the
// derived key included: a payment first sent without a client key and then
// again under one (or the other way round) finds the first request's
// record through it, and is replayed, refused 409 or 422, never verified
// and served a second time.
func (s *Stage) claim(ctx context.Context, slug, key, authID, fp string) (*claim, *http.Response, error) {
	c := &claim{s: s, key: key, fp: fp, keyKey: recordKey(slug, key)}
	rec, _ := json.Marshal(record{State: stateInFlight, Fingerprint: fp, Key: key})
	for attempt := 0; ; attempt++ {
		ok, err := s.cfg.KV.SetNX(ctx, c.keyKey, rec, s.cfg.InFlightTTL)
		if err != nil {
			return nil, nil, kvError(err)
		}
		if ok {
			break
		}
		resp, err := s.decide(ctx, c.keyKey, fp)
		if errors.Is(err, kv.ErrNotFound) {
			if attempt < 3 {
				continue // the holder let go between our SetNX and Get
			}
			return nil, nil, dispatch.ErrIdempotencyKeyInUse.With(fmt.Sprintf("%s: key %q", dispatch.ErrIdempotencyKeyInUse.Message, key), nil)
		}
		return nil, resp, err
	}
	if authID == "" {
		return c, nil, nil
	}
	c.authKey = authKey(authID)
	owner := slug + " " + key
	c.authVal = []byte(owner)
	ok, err := s.cfg.KV.SetNX(ctx, c.authKey, c.authVal, s.cfg.InFlightTTL)
	if err != nil {
		c.drop(ctx)
		return nil, nil, kvError(err)
	}
	if ok {
		c.ownAuth = true
		return c, nil, nil
	}
	other, err := s.cfg.KV.Get(ctx, c.authKey)
	if err == nil && string(other) == owner {
		// A leftover pointing at the key this request now holds (its
		// record expired or was lost): the key's holder owns it.
		c.ownAuth = true
		return c, nil, nil
	}
	// The same authorization is held under another key.
	c.drop(ctx)
	if err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, nil, fmt.Errorf("%w: the same payment authorization is being processed", dispatch.ErrIdempotencyKeyInUse)
		}
		return nil, nil, kvError(err)
	}
	otherSlug, otherKey, _ := strings.Cut(string(other), " ")
	if otherSlug != slug {
		return nil, nil, dispatch.ErrIdempotencyKeyReused.With("this payment authorization was already used for another API's request", nil)
	}
	resp, err := s.decide(ctx, recordKey(slug, otherKey), fp)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: the same payment authorization is being processed under another key", dispatch.ErrIdempotencyKeyInUse)
	}
	return nil, resp, err
}

// decide answers a request whose key is already recorded.
func (s *Stage) decide(ctx context.Context, key, fp string) (*http.Response, error) {
	raw, err := s.cfg.KV.Get(ctx, key)
	if err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, err
		}
		return nil, kvError(err)
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("%w: unreadable idempotency record: %v", dispatch.ErrInternal, err)
	}
	if rec.Fingerprint != fp {
		return nil, fmt.Errorf("%w: key %q was used for a different request", dispatch.ErrIdempotencyKeyReused, rec.Key)
	}
	switch {
	case rec.State == stateInFlight:
		return nil, fmt.Errorf("%w: key %q", dispatch.ErrIdempotencyKeyInUse, rec.Key)
	case rec.State != stateDone && rec.State != statePending, rec.Status < 100, rec.Status > 999:
		// Never replay a record that is not a whole answer (a status out of
		// range would make net/http panic).
		return nil, fmt.Errorf("%w: idempotency record of key %q is in state %q with status %d", dispatch.ErrInternal, rec.Key, rec.State, rec.Status)
	}
	h := rec.Header.Clone()
	if h == nil {
		h = make(http.Header)
	}
	h.Set(HeaderDeduped, "true")
	h.Set(HeaderIdempotencyKey, rec.Key)
	h.Set("Content-Length", strconv.Itoa(len(rec.Body)))
	return dispatch.NewResponse(rec.Status, h, rec.Body), nil
}

// store replaces the in-flight record with the final answer and the
// settlement's outcome, kept for ttl.
func (c *claim) store(ctx context.Context, state string, resp *http.Response, body []byte, ttl time.Duration, out *outcome) {
	h := resp.Header.Clone()
	for _, k := range []string{dispatch.HeaderRequestID, dispatch.HeaderTenantID, "Content-Length"} {
		h.Del(k)
	}
	rec, _ := json.Marshal(record{State: state, Fingerprint: c.fp, Key: c.key, Status: resp.StatusCode, Header: h, Body: body, Outcome: out})
	if err := c.s.cfg.KV.Set(ctx, c.keyKey, rec, ttl); err != nil {
		c.s.log.Error("storing the idempotency record failed; the ledger still refuses a second settlement", "key", c.keyKey, "err", err)
	}
	if c.authKey != "" {
		if err := c.s.cfg.KV.Set(ctx, c.authKey, c.authVal, ttl); err != nil {
			c.s.log.Error("storing the authorization record failed", "key", c.authKey, "err", err)
		}
	}
}

// drop removes what this request claimed, so the client may retry.
func (c *claim) drop(ctx context.Context) {
	if err := c.s.cfg.KV.Delete(ctx, c.keyKey); err != nil {
		c.s.log.Warn("releasing an idempotency key failed; it expires by itself", "key", c.keyKey, "err", err)
	}
	if c.ownAuth {
		if err := c.s.cfg.KV.Delete(ctx, c.authKey); err != nil {
			c.s.log.Warn("releasing an authorization record failed", "key", c.authKey, "err", err)
		}
	}
}

// keepOutcome keeps a failed settlement's outcome for Recover, before its
// ledger entry is written.
func (s *Stage) keepOutcome(ctx context.Context, e ledger.Entry) {
	raw, _ := json.Marshal(outcome{EntryID: e.ID, Status: e.Status, TxHash: e.TxHash})
	if err := s.cfg.KV.Set(ctx, outcomeKey(e.ID), raw, outcomeTTL); err != nil {
		s.log.Warn("keeping a settlement outcome failed", "tenant", e.Tenant, "key", e.IdempotencyKey, "err", err)
	}
}

// knownOutcome returns what Recover can learn of an intent's outcome: a
// failed settlement kept by keepOutcome, or the outcome stored with the
// idempotency record of the entry's key.
func (s *Stage) knownOutcome(ctx context.Context, e ledger.Entry) (*outcome, error) {
	raw, err := s.cfg.KV.Get(ctx, outcomeKey(e.ID))
	if err == nil {
		var o outcome
		if json.Unmarshal(raw, &o) == nil && o.EntryID == e.ID {
			return &o, nil
		}
	} else if !errors.Is(err, kv.ErrNotFound) {
		return nil, err
	}
	raw, err = s.cfg.KV.Get(ctx, recordKey(e.Tenant, e.IdempotencyKey))
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if json.Unmarshal(raw, &rec) == nil && rec.Outcome != nil && rec.Outcome.EntryID == e.ID {
		return rec.Outcome, nil
	}
	return nil, nil
}

// kvError fails a request closed, unpaid and unserved, when idempotency
// records cannot be read or written.
func kvError(err error) error {
	return fmt.Errorf("%w: idempotency records: %v", dispatch.ErrStoreUnavailable, err)
}
