package x402

import (
	"bytes"
	"encoding/json"
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
	`{"a":{"scheme":1},"scheme" : [ {"scheme":2} ] }`,
	`{"sch\u0065me":{"x":"}"}}`,
	`{"authorization":{},"signature":"0x"}`,
	`{"Authorization":1}`,
	`{"authoriz\u0061tion":null}`,
	`null`,
}

func checkExactKeys(t *testing.T, raw string) {
	want := []string{"scheme", "network", "amount", "payload", "x"}
	got := exactKeys([]byte(raw), "obj", want...)
	ref := exactKeysDecoder([]byte(raw), "obj", want...)
	if fmt.Sprint(got) != fmt.Sprint(ref) {
		t.Fatalf("%q: exactKeys says %v, the decoder walk %v", raw, got, ref)
	}
	var probe map[string]json.RawMessage
	_, isEIP3009 := probe["authorization"]
	if json.Unmarshal([]byte(raw), &probe) == nil {
		_, isEIP3009 = probe["authorization"]
	}
	if IsEIP3009Payload(SchemeExact, []byte(raw)) != isEIP3009 {
		t.Fatalf("%q: IsEIP3009Payload says %v, a map decoding %v", raw, !isEIP3009, isEIP3009)
	}
	// Where the keys are as the decoders require, member finds the value
	// encoding/json decodes for that key.
	if got != nil || !json.Valid([]byte(raw)) {
		return
	}
	if validExactKeys([]byte(raw), "obj", want...) != nil {
		t.Fatalf("%q: validExactKeys refuses what exactKeys accepts", raw)
	}
	var v struct {
		Scheme json.RawMessage `json:"scheme"`
	}
	if json.Unmarshal([]byte(raw), &v) != nil {
		return
	}
	if m := member([]byte(raw), "scheme"); !bytes.Equal(m, v.Scheme) {
		t.Fatalf("%q: member gives %q, encoding/json %q", raw, m, v.Scheme)
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
