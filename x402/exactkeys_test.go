package x402

import (
	"fmt"
	"testing"
)

// exactKeys walks valid JSON itself; it must answer as the json.Decoder
// walk does for every input, valid or not.

var exactKeysSeeds = []string{
	`{"scheme":"exact","network":"eip155:84532","amount":"10000"}`,
	` { "Scheme" : "exact" } `,
	`{"scheme":"a","SCHEME":"b"}`,
	`{"sch\u0065me":"a","scheme":"b"}`,
	`{"sch\u0045me":"a"}`,
	`{"x":{"scheme":[1,2,{"a":"}"}]},"y":"\"{","z":-1.5e3,"t":true,"n":null}`,
	`{"payload":{"authorization":{"from":"0x1"},"signature":"0x2"}}`,
	`{"a":1,}`,
	`{"a" 1}`,
	`[1,2]`,
	`"scheme"`,
	`{"é":1,"É":2}`,
	"{\"\xff\":1,\"\xfe\":2}",
	`{"scheme":"exact"} trailing`,
	``,
	`{`,
	`{"k":"v","k":"w"}`,
	`{"ſcheme":1}`,
}

func checkExactKeys(t *testing.T, raw string) {
	want := []string{"scheme", "network", "amount", "payload", "x"}
	got := exactKeys([]byte(raw), "obj", want...)
	ref := exactKeysDecoder([]byte(raw), "obj", want...)
	if fmt.Sprint(got) != fmt.Sprint(ref) {
		t.Fatalf("%q: exactKeys says %v, the decoder walk %v", raw, got, ref)
	}
}

func TestExactKeysMatchesDecoder(t *testing.T) {
	for _, raw := range exactKeysSeeds {
		checkExactKeys(t, raw)
	}
}

func FuzzExactKeys(f *testing.F) {
	for _, raw := range exactKeysSeeds {
		f.Add(raw)
	}
	f.Fuzz(checkExactKeys)
}
