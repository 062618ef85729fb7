package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// testKey is a well-known development key (it never holds funds), the same
// as examples/payclient's.
const testKey = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

func (c *cli) pay(args []string) error {
	fs := flag.NewFlagSet("pay", flag.ContinueOnError)
	key := fs.String("key", "", "hex private key of the payer, a test key (CLAW_PAY_KEY)")
	v1 := fs.Bool("v1", false, "answer the v1 JSON body with X-PAYMENT instead of the v2 header")
	agent := fs.String("agent", "", "X-Agent-Id to send (the caller identity)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("pay takes one URL: claw pay URL")
	}
	target := pos[0]
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		if !strings.HasPrefix(target, "/") {
			return usagef("pay: %q is not an http(s) URL or a path on the gateway", target)
		}
		target = c.base + target
	}
	signer, err := localfacilitator.NewSigner(firstNonEmpty(*key, c.env("CLAW_PAY_KEY"), testKey))
	if err != nil {
		return usagef("--key: %v", err)
	}
	get := func(h http.Header) (*http.Response, []byte, error) {
		req, err := http.NewRequest(http.MethodGet, target, nil)
		if err != nil {
			return nil, nil, err
		}
		if *agent != "" {
			req.Header.Set("X-Agent-Id", *agent)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot reach %s: %v", target, unwrapURLError(err))
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		return resp, body, err
	}
	resp, body, err := get(nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusPaymentRequired {
		fmt.Fprintf(c.out, "%d (no payment asked)\n%s\n", resp.StatusCode, strings.TrimRight(string(body), "\n"))
		if resp.StatusCode >= 400 {
			return fmt.Errorf("%s answered %d", target, resp.StatusCode)
		}
		return nil
	}
	offers, version, err := readChallenge(resp, body, *v1)
	if err != nil {
		return err
	}
	var sp *localfacilitator.SignedPayment
	var chosen x402.Requirement
	var reasons []string
	for _, req := range offers {
		s, err := signer.Sign(req, version, localfacilitator.SignOptions{})
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s on %s: %v", req.Scheme, req.Network, err))
			continue
		}
		sp, chosen = s, req
		break
	}
	if sp == nil {
		return fmt.Errorf("none of the %d offers can be signed here: %s", len(offers), strings.Join(reasons, "; "))
	}
	fmt.Fprintf(c.out, "402: paying %s atomic units of %s on %s to %s (%s, x402 v%d)\n", chosen.Amount, chosen.Asset, chosen.Network, chosen.PayTo, chosen.Scheme, version)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	resp, body, err = get(h)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%d (payer %s)\n", resp.StatusCode, signer.Address())
	for _, name := range []string{x402.HeaderPaymentResponse, "X-PAYMENT-RESPONSE"} {
		if v := resp.Header.Get(name); v != "" {
			sr, err := x402.DecodeSettleResponse(v)
			if err != nil {
				return fmt.Errorf("decoding %s: %w", name, err)
			}
			fmt.Fprintf(c.out, "settled: success=%v transaction=%s network=%s\n", sr.Success, sr.Transaction, sr.Network)
		}
	}
	if k := resp.Header.Get("X-Payment-Idempotency-Key"); k != "" {
		fmt.Fprintf(c.out, "payment key: %s   (claw payments %s)\n", k, k)
	}
	fmt.Fprintf(c.out, "%s\n", strings.TrimRight(string(body), "\n"))
	if resp.StatusCode >= 400 {
		return fmt.Errorf("the paid request answered %d", resp.StatusCode)
	}
	return nil
}

// readChallenge returns what a 402 offers: the v2 header's accepts (unless
// v1 is asked), else the v1 body's.
func readChallenge(resp *http.Response, body []byte, v1 bool) ([]x402.Requirement, int, error) {
	if hv := resp.Header.Get(x402.HeaderPaymentRequired); hv != "" && !v1 {
		pr, err := x402.DecodePaymentRequired(hv)
		if err != nil {
			return nil, 0, fmt.Errorf("reading the PAYMENT-REQUIRED header: %w", err)
		}
		var out []x402.Requirement
		for _, a := range pr.Accepts {
			out = append(out, x402.RequirementFromV2(a, pr.Resource))
		}
		if len(out) == 0 {
			return nil, 0, errors.New("the 402 offers nothing to pay with")
		}
		return out, x402.Version2, nil
	}
	var pr x402.PaymentRequiredV1
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, 0, fmt.Errorf("reading the v1 challenge body: %v", err)
	}
	var out []x402.Requirement
	for _, a := range pr.Accepts {
		out = append(out, x402.RequirementFromV1(a))
	}
	if len(out) == 0 {
		return nil, 0, errors.New("the 402 offers nothing to pay with")
	}
	return out, x402.Version1, nil
}
