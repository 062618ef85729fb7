package ledger

import "time"

// appendEntryJSON appends the canonical JSON of e to dst without
// reflection or a re-encoding pass: the settlement path encodes one entry
// per payment, and the generic CanonicalJSON (marshal, parse, sort,
// encode) was a fifth of a settlement's CPU. It covers the entries the
// gateway writes (printable ASCII strings, a UTC time of a four-digit
// year) and reports false for anything else, which the caller then
// encodes the generic way; both give the same bytes (TestEntryJSONMatches
// and FuzzEntryJSON hold them to it).
func appendEntryJSON(dst []byte, e *Entry) ([]byte, bool) {
	if e.Time.Location() != time.UTC || e.Time.Year() < 0 || e.Time.Year() > 9999 {
		return dst, false
	}
	// Keys in bytewise order; channel and cumulative are omitted when
	// empty (omitempty).
	fields := [...]struct {
		key, val string
		omit     bool
	}{
		{`{"amount":`, e.Amount, false},
		{`,"amountAtomic":`, e.AmountAtomic, false},
		{`,"asset":`, e.Asset, false},
		{`,"channel":`, e.Channel, e.Channel == ""},
		{`,"cumulative":`, e.Cumulative, e.Cumulative == ""},
		{`,"id":`, "", false}, // written below, from the UUID
		{`,"idempotencyKey":`, e.IdempotencyKey, false},
		{`,"network":`, e.Network, false},
		{`,"owner":`, e.Owner, false},
		{`,"payTo":`, e.PayTo, false},
		{`,"payer":`, e.Payer, false},
		{`,"requestId":`, e.RequestID, false},
		{`,"resource":`, e.Resource, false},
		{`,"status":`, string(e.Status), false},
		{`,"tenant":`, e.Tenant, false},
	}
	for i, f := range fields {
		if f.omit {
			continue
		}
		dst = append(dst, f.key...)
		if i == 5 {
			var id [36]byte
			hexUUID(&id, e.ID)
			dst = append(dst, '"')
			dst = append(dst, id[:]...)
			dst = append(dst, '"')
			continue
		}
		var ok bool
		if dst, ok = appendPlainString(dst, f.val); !ok {
			return dst, false
		}
	}
	dst = append(dst, `,"time":"`...)
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","txHash":`...)
	dst, ok := appendPlainString(dst, e.TxHash)
	if !ok {
		return dst, false
	}
	return append(dst, '}'), true
}

// appendPlainString appends s as a JSON string if it is printable ASCII,
// escaping only the quote and the backslash as encoding/json does; any
// other byte reports false.
func appendPlainString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', c)
			start = i + 1
		case c < 0x20 || c > 0x7e:
			return dst, false
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), true
}

// hexUUID writes id in its canonical 8-4-4-4-12 lower-case form.
func hexUUID(dst *[36]byte, id [16]byte) {
	const digits = "0123456789abcdef"
	j := 0
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = digits[b>>4], digits[b&0xf]
		j += 2
	}
}
