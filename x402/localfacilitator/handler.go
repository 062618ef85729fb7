package localfacilitator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/402claw/dispatcher/x402"
)

// Handler serves the facilitator over HTTP, as x402.FacilitatorClient (and
// the reference x402 SDKs) expect:
//
//   - POST /verify and POST /settle take {"x402Version", "paymentPayload",
//     "paymentRequirements"} and answer 200 with a VerifyResponse or
//     SettleResponse, whatever the verdict;
//   - a body that cannot be parsed is answered 400 with isValid false (or
//     success false) and reason invalid_payload or
//     invalid_payment_requirements;
//   - a failing nonce store is answered 500 with {"error": ...} and no
//     verdict, which a client reads as "facilitator unavailable";
//   - a successful upto settle answer also carries "amount", the charge
//     transferred (possibly "0");
//   - GET /supported lists the supported kinds.
//
// Mount it at the root of its own server, or under a prefix with
// http.StripPrefix.
func (f *Facilitator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /verify", f.serveVerify)
	mux.HandleFunc("POST /settle", f.serveSettle)
	mux.HandleFunc("GET /supported", f.serveSupported)
	return mux
}

func (f *Facilitator) serveVerify(w http.ResponseWriter, r *http.Request) {
	req, reason, ok := readRequest(w, r)
	if !ok {
		writeJSON(w, http.StatusBadRequest, x402.VerifyResponse{IsValid: false, InvalidReason: reason})
		return
	}
	resp, err := f.Verify(r.Context(), req)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (f *Facilitator) serveSettle(w http.ResponseWriter, r *http.Request) {
	req, reason, ok := readRequest(w, r)
	if !ok {
		writeJSON(w, http.StatusBadRequest, x402.SettleResponse{Success: false, ErrorReason: reason})
		return
	}
	resp, err := f.Settle(r.Context(), req)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (f *Facilitator) serveSupported(w http.ResponseWriter, r *http.Request) {
	resp, err := f.Supported(r.Context())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// readRequest reads and parses a verify/settle body. When it fails it
// returns the x402 reason to answer with.
func readRequest(w http.ResponseWriter, r *http.Request) (x402.FacilitatorRequest, string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, x402.MaxRequestBodyBytes))
	if err != nil {
		return x402.FacilitatorRequest{}, x402.ReasonInvalidPayload, false
	}
	req, err := ParseRequest(body)
	if err != nil {
		if errors.Is(err, x402.ErrInvalidRequirement) {
			return x402.FacilitatorRequest{}, x402.ReasonInvalidRequirements, false
		}
		return x402.FacilitatorRequest{}, x402.ReasonInvalidPayload, false
	}
	return req, "", true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
