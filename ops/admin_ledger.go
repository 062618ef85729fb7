package ops

import (
	"errors"
	"net/http"

	"github.com/402claw/dispatcher/ledger"
)

// VerifyResult is the answer of GET /__platform/ledger/verify.
type VerifyResult struct {
	// OK tells whether the whole chain verified.
	OK bool `json:"ok"`
	// Records is how many records verified before the end or the break.
	Records int64 `json:"records"`
	// BrokenAtSeq and Reason locate the first broken link when OK is false.
	BrokenAtSeq int64  `json:"brokenAtSeq,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

func (h *AdminHandler) verifyLedger(w http.ResponseWriter, r *http.Request, rid string) {
	n, err := h.cfg.Ledger.Verify(r.Context())
	var ce *ledger.ChainError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, VerifyResult{OK: true, Records: n})
	case errors.As(err, &ce):
		writeJSON(w, http.StatusOK, VerifyResult{Records: n, BrokenAtSeq: ce.Seq, Reason: ce.Reason})
	default:
		h.fail(w, r, rid, err)
	}
}
