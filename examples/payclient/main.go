// Command payclient pays for one x402-protected URL with a local test key,
// the way a real x402 client does: it requests the URL, reads the 402
// challenge (the v2 PAYMENT-REQUIRED header, or with -v1 the v1 JSON body),
// picks the accepts entry of the chosen scheme, signs it, retries with
// PAYMENT-SIGNATURE (or X-PAYMENT), and prints the answer and the decoded
// settle response (with the amount charged, for upto).
//
//	go run ./examples/payclient -url 'http://127.0.0.1:8402/t/demo-paid/premium/rows?limit=2'
//	go run ./examples/payclient -scheme exact-permit2 -url '.../t/demo-paid/permit2/rows?limit=2'
//	go run ./examples/payclient -scheme upto -url '.../t/demo-paid/metered/rows?limit=2'
//	go run ./examples/payclient -scheme batch-settlement -url '.../t/demo-paid/llm/rows?limit=2'
//
// -scheme exact signs an EIP-3009 TransferWithAuthorization, exact-permit2
// a Permit2 PermitWitnessTransferFrom for the exact proxy (an exact entry
// with extra.assetTransferMethod "permit2"), upto a Permit2 authorization
// of the route's maximum for the upto proxy and the facilitator the entry
// names; the last two exist only in version 2.
//
// The key never holds funds: it is for the local facilitator. -replay sends
// the same signed payment a second time, which the gateway answers from its
// idempotency record without charging again.
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
)

// testKey is a well-known development key (it never holds funds).
const testKey = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

func main() {
	url := flag.String("url", "http://127.0.0.1:8402/t/demo-paid/premium/rows?limit=2", "paid URL")
	key := flag.String("key", testKey, "hex private key of the payer (a test key)")
	v1 := flag.Bool("v1", false, "answer the v1 JSON body with X-PAYMENT instead of the v2 header")
	replay := flag.Bool("replay", false, "send the same payment twice")
	agent := flag.String("agent", "", "X-Agent-Id to send (the caller identity)")
	scheme := flag.String("scheme", "exact", "what to pay with: exact (EIP-3009), exact-permit2 or upto")
	flag.Parse()
	if err := run(*url, *key, *scheme, *v1, *replay, *agent, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "payclient:", err)
		os.Exit(1)
	}
}

// pick returns the first accepts entry meant for scheme (a directory
// name: exact, exact-permit2, upto).
func pick(accepts []x402.Requirement, scheme string) (x402.Requirement, error) {
	var offered []string
	for _, r := range accepts {
		method := r.ExtraString(permit2.ExtraAssetTransferMethod)
		name := r.Scheme
		if r.Scheme == x402.SchemeExact && method == permit2.TransferMethod {
			name = permit2.Name
		}
		offered = append(offered, name)
		if name == scheme {
			return r, nil
		}
	}
	return x402.Requirement{}, fmt.Errorf("the challenge offers no %s entry (it offers: %s)", scheme, strings.Join(offered, ", "))
}

func run(url, key, scheme string, v1, replay bool, agent string, out io.Writer) error {
	if scheme == channel.Name && !v1 {
		return runChannel(url, key, agent, out) // channel.go
	}
	switch scheme {
	case x402.SchemeExact, permit2.Name, upto.Name:
	default:
		return fmt.Errorf("-scheme %q: want exact, exact-permit2 or upto", scheme)
	}
	if v1 && scheme != x402.SchemeExact {
		return fmt.Errorf("-scheme %s exists only in x402 version 2: drop -v1", scheme)
	}
	signer, err := localfacilitator.NewSigner(key)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(h http.Header) (*http.Response, []byte, error) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return nil, nil, err
		}
		if agent != "" {
			req.Header.Set("X-Agent-Id", agent)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	resp, body, err := get(nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusPaymentRequired {
		fmt.Fprintf(out, "%d (no payment asked)\n%s\n", resp.StatusCode, body)
		return nil
	}
	var accepts []x402.Requirement
	version := 2
	if v1 {
		version = 1
		var pr x402.PaymentRequiredV1
		if err := json.Unmarshal(body, &pr); err != nil || len(pr.Accepts) == 0 {
			return fmt.Errorf("reading the v1 challenge body: %v", err)
		}
		for _, a := range pr.Accepts {
			accepts = append(accepts, x402.RequirementFromV1(a))
		}
	} else {
		pr, err := x402.DecodePaymentRequired(resp.Header.Get(x402.HeaderPaymentRequired))
		if err != nil {
			return fmt.Errorf("reading the PAYMENT-REQUIRED header: %w", err)
		}
		if len(pr.Accepts) == 0 {
			return errors.New("the challenge accepts nothing")
		}
		for _, a := range pr.Accepts {
			accepts = append(accepts, x402.RequirementFromV2(a, pr.Resource))
		}
	}
	req, err := pick(accepts, scheme)
	if err != nil {
		return err
	}
	what := "pay"
	if req.Scheme == upto.Name {
		what = "authorize up to"
	}
	fmt.Fprintf(out, "402 (%s): %s %s atomic units of %s on %s to %s\n", scheme, what, req.Amount, req.Asset, req.Network, req.PayTo)
	sp, err := signer.Sign(req, version, localfacilitator.SignOptions{})
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	rounds := 1
	if replay {
		rounds = 2
	}
	for i := 0; i < rounds; i++ {
		resp, body, err = get(h)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d %s (payer %s)\n", resp.StatusCode, sp.Header, signer.Address())
		if d := resp.Header.Get("X-Payment-Deduped"); d != "" {
			fmt.Fprintf(out, "X-Payment-Deduped: %s (not charged again)\n", d)
		}
		for _, name := range []string{"PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"} {
			if v := resp.Header.Get(name); v != "" {
				sr, err := x402.DecodeSettleResponse(v)
				if err != nil {
					return fmt.Errorf("decoding %s: %w", name, err)
				}
				fmt.Fprintf(out, "%s: success=%v transaction=%s network=%s%s\n", name, sr.Success, sr.Transaction, sr.Network, chargedAmount(v))
			}
		}
		fmt.Fprintf(out, "%s\n", body)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("paid request answered %d", resp.StatusCode)
	}
	return nil
}

// chargedAmount returns " amount=<n>" when a settle response header
// carries the amount charged (upto answers do), else "". It reads the JSON
// itself: x402.DecodeSettleResponse does not keep the amount.
func chargedAmount(headerValue string) string {
	b, err := base64.StdEncoding.DecodeString(headerValue)
	if err != nil {
		return ""
	}
	var v struct {
		Amount string `json:"amount"`
	}
	if json.Unmarshal(b, &v) != nil || v.Amount == "" {
		return ""
	}
	return " amount=" + v.Amount
}
