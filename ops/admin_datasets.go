package ops

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// DatasetInfo is the answer of the data set routes.
type DatasetInfo struct {
	Dataset
	// Rows and Columns describe the parsed table (on upload).
	Rows    int      `json:"rows,omitempty"`
	Columns []string `json:"columns,omitempty"`
}

func (h *AdminHandler) getDataset(w http.ResponseWriter, r *http.Request, rid string, p principal, name string) {
	ds, err := h.cfg.Datasets.StatDataset(r.Context(), name)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	if !p.owns(ds.OwnerUserID) {
		h.fail(w, r, rid, fmt.Errorf("%w: data set %q belongs to another owner", errForbidden, name))
		return
	}
	writeJSON(w, http.StatusOK, DatasetInfo{Dataset: ds})
}

func (h *AdminHandler) putDataset(w http.ResponseWriter, r *http.Request, rid string, p principal, name string) {
	if r.ContentLength > h.maxData {
		h.fail(w, r, rid, &http.MaxBytesError{Limit: h.maxData})
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxData))
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	owner := p.userID
	ds, table, err := NewDataset(name, owner, data, h.now())
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, err := h.cfg.Datasets.StatDataset(r.Context(), name)
	created := errors.Is(err, ErrNotFound)
	switch {
	case created:
	case err != nil:
		h.fail(w, r, rid, err)
		return
	case !p.owns(old.OwnerUserID):
		h.fail(w, r, rid, fmt.Errorf("%w: data set %q belongs to another owner", errForbidden, name))
		return
	case p.admin:
		ds.OwnerUserID = old.OwnerUserID // the admin replaces the data, not the owner
	}
	if err := h.cfg.Datasets.PutDataset(r.Context(), ds); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	ds.Data = nil
	writeJSON(w, status, DatasetInfo{Dataset: ds, Rows: len(table.Rows), Columns: table.Columns})
}

func (h *AdminHandler) deleteDataset(w http.ResponseWriter, r *http.Request, rid string, p principal, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds, err := h.cfg.Datasets.StatDataset(r.Context(), name)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	if !p.owns(ds.OwnerUserID) {
		h.fail(w, r, rid, fmt.Errorf("%w: data set %q belongs to another owner", errForbidden, name))
		return
	}
	for _, t := range h.cfg.Registry.Load().Tenants() {
		if t.WorkerName == DatasetWorkerPrefix+name {
			h.fail(w, r, rid, fmt.Errorf("%w: tenant %q serves data set %q; remove the tenant first", errConflict, t.Slug, name))
			return
		}
	}
	if err := h.cfg.Datasets.DeleteDataset(r.Context(), name); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "deleted": name})
}
