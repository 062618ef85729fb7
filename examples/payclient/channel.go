package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

// channelRequests is how many paid requests a -scheme batch-settlement
// session makes before it asks for its refund.
const channelRequests = 3

// runChannel pays with a batch-settlement channel: it deposits 100 times
// the per-request maximum with the first voucher, signs one cumulative
// voucher per further request from the chargedCumulativeAmount the
// gateway reports, resynchronises once on a corrective 402 (after checking
// that the voucher the gateway holds is its own), and finally asks for a
// cooperative refund of what is left.
func runChannel(url, key, agent string, out io.Writer) error {
	kb, err := hex.DecodeString(strings.TrimPrefix(key, "0x"))
	if err != nil || len(kb) != 32 {
		return errors.New("-key: want 32 bytes of hex")
	}
	cl := channel.NewClient(secp256k1.PrivKeyFromBytes(kb))
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(header string) (*http.Response, []byte, error) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return nil, nil, err
		}
		if agent != "" {
			req.Header.Set("X-Agent-Id", agent)
		}
		if header != "" {
			req.Header.Set(x402.HeaderPaymentSignature, header)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	resp, body, err := get("")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusPaymentRequired {
		fmt.Fprintf(out, "%d (no payment asked)\n%s\n", resp.StatusCode, body)
		return nil
	}
	req, _, err := channelEntry(resp)
	if err != nil {
		return err
	}
	amount, err := strconv.ParseUint(req.Amount, 10, 64)
	if err != nil {
		return fmt.Errorf("the batch-settlement entry's amount %q: %w", req.Amount, err)
	}
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	if err != nil {
		return err
	}
	chainID, _ := x402.EVMChainID(req.Network)
	id, err := cfg.ID(chainID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "402 (batch-settlement): up to %s atomic units per request; channel %s\n", req.Amount, id)

	var charged uint64
	send := func(pl *channel.Payload) (*http.Response, []byte, error) {
		raw, err := json.Marshal(map[string]any{"x402Version": 2, "accepted": req.V2(), "payload": pl})
		if err != nil {
			return nil, nil, err
		}
		return get(encodeBase64(raw))
	}
	for i := 0; i < channelRequests; i++ {
		var pl *channel.Payload
		if i == 0 {
			now := time.Now()
			pl, err = cl.DepositPayload(req, cfg, 100*amount, charged+amount, now.Add(-time.Minute), now.Add(time.Duration(req.MaxTimeoutSeconds)*time.Second))
		} else {
			pl, err = cl.VoucherPayload(req, cfg, charged+amount)
		}
		if err != nil {
			return err
		}
		resp, body, err := send(pl)
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusPaymentRequired && i > 0 {
			// A corrective 402: adopt the gateway's charged amount if the
			// voucher it holds is ours, then retry once.
			if charged, err = resync(resp, cl, id, chainID); err != nil {
				return err
			}
			fmt.Fprintf(out, "402 corrective: the gateway has charged %d; retrying\n", charged)
			if pl, err = cl.VoucherPayload(req, cfg, charged+amount); err != nil {
				return err
			}
			if resp, body, err = send(pl); err != nil {
				return err
			}
		}
		sr, cs, err := channelResponse(resp)
		if err != nil {
			return fmt.Errorf("request %d answered %d: %w\n%s", i+1, resp.StatusCode, err, body)
		}
		prev := charged
		if charged, err = strconv.ParseUint(cs.ChargedCumulativeAmount, 10, 64); err != nil {
			return fmt.Errorf("channelState.chargedCumulativeAmount %q: %w", cs.ChargedCumulativeAmount, err)
		}
		if charged < prev || charged-prev > amount || !strings.EqualFold(cs.ChannelID, id) {
			return fmt.Errorf("the gateway's channel state is inconsistent (charged %d after %d, max %d per request): stop signing", charged, prev, amount)
		}
		fmt.Fprintf(out, "%d %s: charged %v, cumulative %d, balance %s%s\n", resp.StatusCode, pl.Type, sr.Extra[channel.ExtraChargedAmount], charged, cs.Balance, txNote(sr))
	}
	pl, err := cl.RefundPayload(req, cfg, charged, "")
	if err != nil {
		return err
	}
	resp, body, err = send(pl)
	if err != nil {
		return err
	}
	sr, cs, err := channelResponse(resp)
	if err != nil {
		return fmt.Errorf("the refund answered %d: %w\n%s", resp.StatusCode, err, body)
	}
	fmt.Fprintf(out, "%d refund: %s returned, balance %s%s\n", resp.StatusCode, sr.Amount, cs.Balance, txNote(sr))
	return nil
}

func encodeBase64(b []byte) string {
	return base64.StdEncoding.EncodeToString(b)
}

func txNote(sr *x402.SettleResponse) string {
	if sr.Transaction == "" {
		return ""
	}
	return " (transaction " + sr.Transaction + ")"
}

// channelEntry reads the batch-settlement entry of a 402's
// PAYMENT-REQUIRED header.
func channelEntry(resp *http.Response) (x402.Requirement, *x402.PaymentRequired, error) {
	pr, err := x402.DecodePaymentRequired(resp.Header.Get(x402.HeaderPaymentRequired))
	if err != nil {
		return x402.Requirement{}, nil, fmt.Errorf("reading the PAYMENT-REQUIRED header: %w", err)
	}
	var offered []string
	for _, a := range pr.Accepts {
		if a.Scheme == channel.Name {
			return x402.RequirementFromV2(a, pr.Resource), pr, nil
		}
		offered = append(offered, a.Scheme)
	}
	return x402.Requirement{}, nil, fmt.Errorf("the challenge offers no batch-settlement entry (it offers: %s)", strings.Join(offered, ", "))
}

// resync reads a corrective 402 and returns the gateway's charged amount
// once the voucher it claims to hold verifies as the client's own.
func resync(resp *http.Response, cl *channel.Client, id string, chainID int64) (uint64, error) {
	req, _, err := channelEntry(resp)
	if err != nil {
		return 0, err
	}
	var extra struct {
		ChannelState channel.ChannelState `json:"channelState"`
		VoucherState channel.VoucherState `json:"voucherState"`
	}
	raw, _ := json.Marshal(req.Extra)
	if err := json.Unmarshal(raw, &extra); err != nil || extra.ChannelState.ChargedCumulativeAmount == "" {
		return 0, errors.New("a 402 without the corrective channelState")
	}
	v := channel.Voucher{ChannelID: id, MaxClaimableAmount: extra.VoucherState.SignedMaxClaimable, Signature: extra.VoucherState.Signature}
	signer, err := v.Signer(chainID)
	if err != nil || !strings.EqualFold(signer, cl.Address()) {
		return 0, errors.New("the gateway's voucher proof is not this client's signature: stop signing")
	}
	charged, err := strconv.ParseUint(extra.ChannelState.ChargedCumulativeAmount, 10, 64)
	if err != nil {
		return 0, err
	}
	signedMax, _ := strconv.ParseUint(extra.VoucherState.SignedMaxClaimable, 10, 64)
	if charged > signedMax {
		return 0, errors.New("the gateway claims more than the client signed: stop signing")
	}
	return charged, nil
}

// channelResponse decodes a successful answer's PAYMENT-RESPONSE and its
// extra.channelState.
func channelResponse(resp *http.Response) (*x402.SettleResponse, channel.ChannelState, error) {
	var cs channel.ChannelState
	v := resp.Header.Get(x402.HeaderPaymentResponse)
	if resp.StatusCode >= 300 || v == "" {
		return nil, cs, errors.New("no successful payment response")
	}
	sr, err := x402.DecodeSettleResponse(v)
	if err != nil {
		return nil, cs, err
	}
	raw, _ := json.Marshal(sr.Extra[channel.ExtraChannelState])
	if err := json.Unmarshal(raw, &cs); err != nil || cs.ChannelID == "" {
		return nil, cs, errors.New("the payment response carries no channelState")
	}
	return sr, cs, nil
}
