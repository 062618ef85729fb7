package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// maxUserBody bounds the JSON of POST /__platform/users and of a key's
// optional {"label"}.
const maxUserBody = 16 << 10

func (h *AdminHandler) createUser(w http.ResponseWriter, r *http.Request, rid string) {
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := readJSON(w, r, maxUserBody, &in, false); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	u, err := h.cfg.Accounts.CreateUser(r.Context(), in.ID, in.Name)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	writeJSON(w, http.StatusCreated, u)
}

func (h *AdminHandler) createKey(w http.ResponseWriter, r *http.Request, rid, userID string) {
	var in struct {
		Label string `json:"label"`
	}
	if err := readJSON(w, r, maxUserBody, &in, true); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	k, secret, err := h.cfg.Accounts.IssueKey(r.Context(), userID, in.Label)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		ID     string `json:"id"`
		Key    string `json:"key"`
		UserID string `json:"userId"`
		Label  string `json:"label,omitempty"`
	}{k.ID, secret, k.UserID, k.Label})
}

func (h *AdminHandler) revokeKey(w http.ResponseWriter, r *http.Request, rid, id string) {
	if err := h.cfg.Accounts.RevokeKey(r.Context(), id); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "revoked": id})
}

// readJSON decodes one bounded JSON object from the body; an empty body is
// accepted only when optional.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return err
	}
	if len(body) == 0 && optional {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: the body is not the expected JSON object: %v", errBadBody, err)
	}
	return nil
}
