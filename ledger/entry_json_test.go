package ledger

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The hand-written encoding of an entry must give exactly the bytes of the
// generic canonical JSON, or stored audit records would stop verifying.

func randomEntry(r *rand.Rand) Entry {
	alphabets := []string{
		"abcdefghijklmnopqrstuvwxyz0123456789",
		"0123456789.",
		` !"#$%&'()*+,-./:;<=>?@[\]^_{|}~` + "`",
		"\x00\x1f\t\n\u2028é\xff<>&",
	}
	str := func() string {
		if r.IntN(5) == 0 {
			return ""
		}
		a := alphabets[r.IntN(len(alphabets))]
		if r.IntN(8) != 0 {
			a = alphabets[r.IntN(3)] // mostly what the fast path covers
		}
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = a[r.IntN(len(a))]
		}
		return string(b)
	}
	var id uuid.UUID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	at := time.Unix(r.Int64N(1<<36), r.Int64N(1e9)).UTC()
	switch r.IntN(6) {
	case 0:
		at = at.Truncate(time.Second)
	case 1:
		at = at.In(time.FixedZone("x", 3600))
	case 2:
		at = at.Truncate(time.Microsecond)
	}
	return Entry{
		ID: id, IdempotencyKey: str(), Tenant: str(), Owner: str(), Payer: str(), Amount: str(),
		AmountAtomic: str(), Asset: str(), Network: str(), PayTo: str(), TxHash: str(), Status: Status(str()),
		RequestID: str(), Resource: str(), Time: at, Channel: str(), Cumulative: str(),
	}
}

func TestEntryJSONMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for range 20000 {
		e := randomEntry(r)
		want, werr := canonicalReflect(e)
		got, err := CanonicalJSON(e)
		if werr != nil {
			if err == nil {
				t.Fatalf("%+v: generic fails (%v), CanonicalJSON does not", e, werr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%+v:\n got %s (%v)\nwant %s", e, got, err, want)
		}
		if _, ok := appendEntryJSON(nil, &e); ok {
			fast++
		}
	}
	if fast < 5000 {
		t.Fatalf("only %d of 20000 entries took the fast path", fast)
	}
}

func FuzzEntryJSON(f *testing.F) {
	f.Add("k", "acme", "0.01", "0x\"\\", int64(1764748800123456), byte(0), "")
	f.Add("\xff", "é", "\u2028", "<&>", int64(-62135596800000000), byte(1), "0x12")
	f.Fuzz(func(t *testing.T, key, tenant, amount, payer string, us int64, status byte, channel string) {
		e := Entry{
			IdempotencyKey: key, Tenant: tenant, Amount: amount, Payer: payer,
			Time: time.UnixMicro(us).UTC(), Status: []Status{StatusSettled, StatusCharged, "x\x00"}[status%3],
			Channel: channel, Cumulative: channel,
		}
		want, werr := canonicalReflect(e)
		got, err := CanonicalJSON(e)
		if (err != nil) != (werr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("got %s (%v), want %s (%v)", got, err, want, werr)
		}
	})
}
