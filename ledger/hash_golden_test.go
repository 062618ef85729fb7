package ledger_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
)

// TestHashGolden pins the audit chain's format: the canonical JSON of an
// entry and the hashes of two records, as computed before the encoders
// were rewritten for speed. A change here breaks every stored chain.
func TestHashGolden(t *testing.T) {
	e := ledger.Entry{
		ID: uuid.MustParse("0191d2b6-2f3e-7c2a-9d4e-1a2b3c4d5e6f"), IdempotencyKey: "k<&>\"\\1", Tenant: "acme", Owner: "u1",
		Payer: "0x857b06519E91e3A54538791bDbb0E22373e36b66", Amount: "0.01", AmountAtomic: "10000",
		Asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", Network: "eip155:84532",
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", TxHash: "0xabc", Status: ledger.StatusSettled,
		RequestID: "req-1", Resource: "https://api.example/v1/x?a=1&b=2", Time: time.Date(2026, 12, 3, 7, 50, 1, 123456000, time.UTC),
	}
	d, err := ledger.CanonicalJSON(e)
	require.NoError(t, err)
	require.Equal(t, `{"amount":"0.01","amountAtomic":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",`+
		`"id":"0191d2b6-2f3e-7c2a-9d4e-1a2b3c4d5e6f","idempotencyKey":"k<&>\"\\1","network":"eip155:84532","owner":"u1",`+
		`"payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","payer":"0x857b06519E91e3A54538791bDbb0E22373e36b66",`+
		`"requestId":"req-1","resource":"https://api.example/v1/x?a=1&b=2","status":"settled","tenant":"acme",`+
		`"time":"2026-12-03T07:50:01.123456Z","txHash":"0xabc"}`, string(d))
	r := ledger.Seal(ledger.AuditRecord{Time: e.Time, Kind: "settlement", Tenant: "acme", Subject: e.IdempotencyKey, Data: d}, 41, ledger.GenesisHash)
	require.Equal(t, "225f5ca554539037de05f92ed8a94e55053bf4f303ee93cbaccb52410a3bfd8a", r.Hash)
	// A five-digit year changes the time's width, so its length prefix.
	r = ledger.Seal(ledger.AuditRecord{Time: time.Date(12026, 1, 1, 0, 0, 0, 0, time.UTC), Kind: "x", Data: []byte("null")}, 0, ledger.GenesisHash)
	require.Equal(t, "edd9e41c6c75879a5735120b54d3433acf42e54443996f8df3c71ea11ff087ac", r.Hash)
}
