package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Audit record kinds. The three settlement kinds are written only by
// [Ledger.RecordSettlement], together with a ledger entry whose canonical
// JSON is the record's Data.
const (
	KindSettlement        = "settlement"
	KindSettlementPending = "settlement_pending"
	KindSettlementFailed  = "settlement_failed"
	// KindDirectorySwap records a tenant directory replacement.
	KindDirectorySwap = "directory_swap"
)

// GenesisHash is the PrevHash of the first audit record: 64 zeros.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// hashVersion is the first netstring of every hash preimage, so a future
// encoding can never collide with this one.
const hashVersion = "402claw.audit.v1"

// timeLayout is the fixed-width time format of the hash preimage.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// AuditRecord is one link of the audit chain. Records are never updated or
// deleted.
type AuditRecord struct {
	// Seq is the record's position, from 1, without gaps; the store assigns it.
	Seq int64 `json:"seq"`
	// Time is when the record was written, UTC, microsecond precision.
	Time time.Time `json:"time"`
	// Kind says what happened (see the Kind constants).
	Kind string `json:"kind"`
	// Tenant is the tenant concerned, or "" for platform-wide records.
	Tenant string `json:"tenant"`
	// Subject is what the record is about: the idempotency key for
	// settlements, a directory version for swaps.
	Subject string `json:"subject"`
	// Data is the record's payload as canonical JSON.
	Data json.RawMessage `json:"data"`
	// PrevHash is the Hash of record Seq-1, or GenesisHash; the store sets it.
	PrevHash string `json:"prevHash"`
	// Hash is HashRecord of this record; the store sets it.
	Hash string `json:"hash"`
}

// HashRecord computes the hash of r from its PrevHash, Seq, Time, Kind,
// Tenant, Subject and Data, with the encoding given in the package
// documentation. It ignores r.Hash.
func HashRecord(r AuditRecord) string {
	// The whole preimage is built in one buffer (on the stack unless Data
	// is large) and hashed at once.
	var stack [1024]byte
	p := stack[:0]
	var num [32]byte
	p = appendNetstring(p, hashVersion)
	p = appendNetstring(p, r.PrevHash)
	p = appendNetstring(p, strconv.AppendInt(num[:0], r.Seq, 10))
	p = appendNetstring(p, r.Time.UTC().AppendFormat(num[:0], timeLayout))
	p = appendNetstring(p, r.Kind)
	p = appendNetstring(p, r.Tenant)
	p = appendNetstring(p, r.Subject)
	p = appendNetstring(p, r.Data)
	sum := sha256.Sum256(p)
	var out [64]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// appendNetstring appends s as a netstring: its length in decimal, a
// colon, s and a comma.
func appendNetstring[T ~string | ~[]byte](p []byte, s T) []byte {
	p = strconv.AppendInt(p, int64(len(s)), 10)
	p = append(p, ':')
	p = append(p, s...)
	return append(p, ',')
}

// Seal links r to the chain whose last record has sequence number tailSeq
// and hash tailHash (0 and GenesisHash for an empty chain): it sets Seq,
// PrevHash and Hash and returns the result. Stores call it while holding the
// lock or write transaction in which they read the tail and insert r.
func Seal(r AuditRecord, tailSeq int64, tailHash string) AuditRecord {
	r.Seq = tailSeq + 1
	r.PrevHash = tailHash
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.Hash = HashRecord(r)
	return r
}

// CanonicalJSON returns the canonical JSON encoding of v: the encoding/json
// form of v re-encoded with object keys sorted bytewise, no insignificant
// whitespace, no HTML escaping, and numbers kept exactly as written (they are
// never converted to floating point). A json.RawMessage or []byte v is taken
// as JSON text. Canonical JSON is a fixed point: encoding it again yields the
// same bytes.
func CanonicalJSON(v any) (json.RawMessage, error) {
	if e, ok := v.(Entry); ok {
		if b, ok := appendEntryJSON(make([]byte, 0, 512), &e); ok {
			return b, nil
		}
	}
	return canonicalReflect(v)
}

// canonicalReflect is CanonicalJSON by way of encoding/json.
func canonicalReflect(v any) (json.RawMessage, error) {
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("ledger: canonical json: %w", err)
		}
		raw = b
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("ledger: canonical json: %w", err)
	}
	if err := dec.Decode(new(any)); err != io.EOF {
		return nil, fmt.Errorf("ledger: canonical json: trailing data after the value")
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tree); err != nil {
		return nil, fmt.Errorf("ledger: canonical json: %w", err)
	}
	return json.RawMessage(bytes.TrimSuffix(out.Bytes(), []byte("\n"))), nil
}

// validHash reports whether s is 64 lowercase hex digits.
func validHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f')
	}) < 0
}
