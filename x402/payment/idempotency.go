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
	"github.com/402claw/dispatcher/x402"
)

// Idempotency records live in the KV store:
//
//	x402:{<slug>}:key:<idempotency key>  the record (JSON) of a key the
//	                                     client chose, per tenant
//	x402:auth:<authorization id>         the record (JSON) of the key derived
//	                                     from the authorization ("auth:<id>"),
//	                                     or, when the client chose the key,
//	                                     "<slug> <idempotency key>" naming
//	                                     the record that owns it
//	x402:outcome:<ledger entry id>       a failed settlement's outcome
//
// The authorization record is global, not per tenant: one signed
// authorization can be spent once, so it may buy one request of one tenant
// (two paid tenants with the same payTo and price must not both run their
// workers for it). A key derived from the authorization names the same
// thing, so its record is kept there, with its tenant's slug, and is the
// authorization's record too: one record to claim and store per request
// instead of two (each a random key in the store's index; in SQLite two
// thirds of a paid request's writes to random pages were these).
//
// Before, a derived key's record was kept under the tenant like any other
// ("x402:{<slug>}:key:auth:<id>") and the authorization record named it;
// such pairs, written by an earlier version and still live, are found
// through the authorization record as a key chosen by a client is.
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
	Slug        string      `json:"slug,omitempty"` // the tenant whose request it is
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
	slug, key, fp   string
	keyKey, authKey string
	authVal         []byte
	ownAuth         bool
}

// recordKey is where the record of slug's idempotency key is kept: with the
// authorization for a key derived from it, under the tenant otherwise.
func recordKey(slug, key string) string {
	if id, ok := strings.CutPrefix(key, x402.KeyPrefixAuthorization); ok {
		return authKey(id)
	}
	return tenantRecordKey(slug, key)
}

// tenantRecordKey is where a record is kept under its tenant: every key a
// client chose, and keys derived from an authorization before they were
// kept with it. An authorization record naming "<slug> <key>" names the
// record there.
func tenantRecordKey(slug, key string) string { return "x402:{" + slug + "}:key:" + key }
func authKey(id string) string                { return authKeyPrefix + id }

const authKeyPrefix = "x402:auth:"

// errOtherAPI refuses a payment whose authorization bought a request of
// another tenant.
func errOtherAPI() error {
	return dispatch.ErrIdempotencyKeyReused.With("this payment authorization was already used for another API's request", nil)
}

// pointer reads an authorization record that names the record holding
// the authorization ("<slug> <key>"); ok is false for a derived key's
// record, which is JSON.
func pointer(raw []byte) (slug, key string, ok bool) {
	if len(raw) > 0 && raw[0] == '{' {
		return "", "", false
	}
	slug, key, _ = strings.Cut(string(raw), " ")
	return slug, key, true
}

func outcomeKey(id uuid.UUID) string { return "x402:outcome:" + id.String() }

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
	c := &claim{s: s, slug: slug, key: key, fp: fp, keyKey: recordKey(slug, key)}
	rec, _ := json.Marshal(record{State: stateInFlight, Slug: slug, Fingerprint: fp, Key: key})
	for attempt := 0; ; attempt++ {
		ok, err := s.cfg.KV.SetNX(ctx, c.keyKey, rec, s.cfg.InFlightTTL)
		if err != nil {
			return nil, nil, kvError(err)
		}
		if ok {
			break
		}
		resp, err := s.decide(ctx, slug, c.keyKey, fp)
		if errors.Is(err, kv.ErrNotFound) {
			if attempt < 3 {
				continue // the holder let go between our SetNX and Get
			}
			// An authorization record naming a record that is gone (an
			// earlier layout's leftover): the ledger says whether the
			// payment was settled (422) or may still be in flight (409).
			if prev, lerr := s.cfg.Ledger.Entry(ctx, slug, key); lerr == nil {
				return nil, nil, dispatch.ErrIdempotencyKeyReused.With(fmt.Sprintf("this payment was already settled (ledger entry %s, %s)", prev.ID, prev.Status), nil)
			}
			return nil, nil, dispatch.ErrIdempotencyKeyInUse.With(fmt.Sprintf("%s: key %q", dispatch.ErrIdempotencyKeyInUse.Message, key), nil)
		}
		return nil, resp, err
	}
	if authID == "" || c.keyKey == authKey(authID) {
		// No authorization, or the key derived from it: the record just
		// claimed is the authorization's record.
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
	resp, err := s.decide(ctx, slug, c.authKey, fp)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: the same payment authorization is being processed under another key", dispatch.ErrIdempotencyKeyInUse)
	}
	return nil, resp, err
}

// decide answers a request of tenant slug whose record key is already
// taken: replays the recorded answer, or refuses (409 while the holder is
// in flight, 422 when the key or the authorization bought another request).
// An authorization record that names its holder's record is followed to it.
func (s *Stage) decide(ctx context.Context, slug, key, fp string) (*http.Response, error) {
	raw, err := s.cfg.KV.Get(ctx, key)
	if err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, err
		}
		return nil, kvError(err)
	}
	// At an authorization's key: a derived key's record, which may be
	// another tenant's, or a pointer to the record that holds it.
	atAuth := strings.HasPrefix(key, authKeyPrefix)
	if otherSlug, otherKey, ok := pointer(raw); atAuth && ok {
		if otherSlug != slug {
			return nil, errOtherAPI()
		}
		atAuth = false // the pointer's tenant is this one
		if raw, err = s.cfg.KV.Get(ctx, tenantRecordKey(otherSlug, otherKey)); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return nil, err
			}
			return nil, kvError(err)
		}
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("%w: unreadable idempotency record: %v", dispatch.ErrInternal, err)
	}
	if atAuth && rec.Slug != slug {
		return nil, errOtherAPI()
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
	rec, _ := json.Marshal(record{State: state, Slug: c.slug, Fingerprint: c.fp, Key: c.key, Status: resp.StatusCode, Header: h, Body: body, Outcome: out})
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
	// Where the record of the entry's key may be: with the authorization
	// (a derived key now), or under the tenant (a client's key, or a
	// derived key of the earlier layout, found even when its authorization
	// record is gone). Recover is rare: reading both costs nothing.
	places := []string{recordKey(e.Tenant, e.IdempotencyKey)}
	if t := tenantRecordKey(e.Tenant, e.IdempotencyKey); t != places[0] {
		places = append(places, t)
	}
	for _, k := range places {
		raw, err := s.cfg.KV.Get(ctx, k)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec record
		if json.Unmarshal(raw, &rec) == nil && rec.Outcome != nil && rec.Outcome.EntryID == e.ID {
			return rec.Outcome, nil
		}
	}
	return nil, nil
}

// kvError fails a request closed, unpaid and unserved, when idempotency
// records cannot be read or written.
func kvError(err error) error {
	return fmt.Errorf("%w: idempotency records: %v", dispatch.ErrStoreUnavailable, err)
}
