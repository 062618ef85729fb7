package ops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// MaxTenantBody bounds the JSON of one tenant in PUT /__platform/tenants/<slug>.
const MaxTenantBody = 1 << 20

// TenantUpdater is an optional ability of a tenant.Store: read the stored
// tenants, change them with fn and save the result, all in one transaction
// that excludes every other writer (on every replica). When fn fails,
// nothing is saved and its error is returned as is.
type TenantUpdater interface {
	UpdateTenants(ctx context.Context, fn func(current []tenant.Tenant) ([]tenant.Tenant, error)) error
}

// Version is a short digest of a directory (the first 16 hex digits of the
// SHA-256 of its registry-form JSON): equal directories have equal
// versions. Audit records name the directory they put in force by it.
func Version(d *tenant.Directory) string {
	raw, err := d.MarshalJSON()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// ParseTenant parses one tenant in the registry form (an element of the
// "tenants" array) and validates it alone. slug, when not empty, is the
// slug the tenant must have: a body without a slug takes it, a body with a
// different one is refused.
func ParseTenant(body []byte, slug string) (tenant.Tenant, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return tenant.Tenant{}, fmt.Errorf("%w: the body must be one JSON object (a tenant in the registry form)", errBadBody)
	}
	var probe struct {
		Slug *string `json:"slug"`
	}
	if err := json.Unmarshal(trimmed, &probe); err != nil {
		return tenant.Tenant{}, &tenant.ValidationError{Tenant: slug, Field: "slug", Reason: "must be a string"}
	}
	if slug != "" && probe.Slug != nil && *probe.Slug != slug {
		return tenant.Tenant{}, &tenant.ValidationError{Tenant: slug, Field: "slug", Reason: fmt.Sprintf("%q differs from the slug in the path", clip(*probe.Slug))}
	}
	var doc []byte
	if probe.Slug == nil && slug != "" {
		// Add the path's slug: {"slug":"x",<rest of the object>}.
		s, _ := json.Marshal(slug)
		inner := bytes.TrimSpace(trimmed[1:])
		doc = append([]byte(`{"slug":`), s...)
		if len(inner) > 0 && inner[0] != '}' {
			doc = append(doc, ',')
		}
		doc = append(doc, inner...)
	} else {
		doc = trimmed
	}
	// The object is exactly one JSON value, so wrapping it cannot change
	// the directory's shape.
	d, err := tenant.ParseDirectory(append(append([]byte(`{"tenants":[`), doc...), "]}"...))
	if err != nil {
		return tenant.Tenant{}, err
	}
	ts := d.Tenants()
	if len(ts) != 1 {
		return tenant.Tenant{}, fmt.Errorf("%w: expected one tenant", errBadBody)
	}
	return ts[0], nil
}

// change applies one change to the directory: under the handler's lock it
// reads the current tenants (from the store, which may hold other
// replicas' changes), lets apply edit them, validates the result as a
// whole, saves it, swaps it into the registry and audits it. A failure at
// any step before the save changes nothing.
func (h *AdminHandler) change(ctx context.Context, p principal, op, slug string, apply func(cur []tenant.Tenant) ([]tenant.Tenant, error), after *tenant.Tenant) (*tenant.Directory, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var next *tenant.Directory
	edit := func(cur []tenant.Tenant) ([]tenant.Tenant, error) {
		ts, err := apply(cur)
		if err != nil {
			return nil, err
		}
		d, err := tenant.NewDirectory(ts)
		if err != nil {
			return nil, err
		}
		if h.cfg.Validate != nil {
			if err := h.cfg.Validate(d); err != nil {
				return nil, fmt.Errorf("%w: %v", errRejected, err)
			}
		}
		next = d
		return d.Tenants(), nil
	}
	switch s := h.cfg.Store.(type) {
	case nil:
		if _, err := edit(h.cfg.Registry.Load().Tenants()); err != nil {
			return nil, err
		}
	case TenantUpdater:
		if err := s.UpdateTenants(ctx, edit); err != nil {
			return nil, err
		}
	default:
		cur, err := s.LoadTenants(ctx)
		if err != nil {
			return nil, fmt.Errorf("loading the stored directory: %w", err)
		}
		ts, err := edit(cur)
		if err != nil {
			return nil, err
		}
		if err := s.SaveTenants(ctx, ts); err != nil {
			return nil, fmt.Errorf("saving the directory: %w", err)
		}
	}
	h.cfg.Registry.Swap(next)
	version := Version(next)
	data := map[string]any{"op": op, "slug": slug, "by": p.actor(), "version": version, "tenants": next.Len(), "tenant": after}
	if _, err := h.cfg.Ledger.Audit(ctx, ledger.KindDirectorySwap, slug, version, data); err != nil {
		// The change is saved and served; only its audit record is missing.
		return next, fmt.Errorf("the change was applied but could not be audited: %w", err)
	}
	return next, nil
}

func index(ts []tenant.Tenant, slug string) int {
	for i := range ts {
		if ts[i].Slug == slug {
			return i
		}
	}
	return -1
}

func (h *AdminHandler) listTenants(w http.ResponseWriter, r *http.Request, rid string, p principal) {
	d := h.cfg.Registry.Load()
	out := []tenant.Tenant{}
	for _, t := range d.Tenants() {
		if p.owns(t.OwnerUserID) {
			out = append(out, t)
		}
	}
	w.Header().Set("X-Directory-Version", Version(d))
	writeJSON(w, http.StatusOK, struct {
		Tenants []tenant.Tenant `json:"tenants"`
	}{out})
}

func (h *AdminHandler) getTenant(w http.ResponseWriter, r *http.Request, rid string, p principal, slug string) {
	t, ok := h.cfg.Registry.Load().Lookup(slug)
	if !ok {
		h.fail(w, r, rid, fmt.Errorf("%w: no tenant %q", ErrNotFound, slug))
		return
	}
	if !p.owns(t.OwnerUserID) {
		h.fail(w, r, rid, fmt.Errorf("%w: tenant %q belongs to another owner", errForbidden, slug))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (h *AdminHandler) putTenant(w http.ResponseWriter, r *http.Request, rid string, p principal, slug string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxTenantBody))
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	t, err := ParseTenant(body, slug)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	if !p.admin {
		t.OwnerUserID = p.userID // from the key, never from the body
	}
	if err := h.checkWorker(r.Context(), p, t); err != nil {
		h.fail(w, r, rid, err)
		return
	}
	created := false
	d, err := h.change(r.Context(), p, "put", slug, func(cur []tenant.Tenant) ([]tenant.Tenant, error) {
		i := index(cur, slug)
		if i >= 0 && !p.owns(cur[i].OwnerUserID) {
			return nil, fmt.Errorf("%w: tenant %q belongs to another owner", errForbidden, slug)
		}
		if !p.admin {
			// Host names route requests before /t/<slug>/ paths do, so
			// only the admin assigns them: an owner keeps what the tenant
			// has.
			var have []string
			if i >= 0 {
				have = cur[i].Hosts
			}
			if len(t.Hosts) > 0 && !slices.Equal(t.Hosts, have) {
				return nil, fmt.Errorf("%w: tenant %q: hosts are assigned by the platform admin", errForbidden, slug)
			}
			t.Hosts = have
			// Plans and limit overrides are the platform's to give: an
			// owner keeps what the tenant has (a new tenant starts on the
			// free plan with none), so no owner escapes quarantine or
			// raises its own CPU, subrequest or rate allowances.
			if i >= 0 {
				t.Plan, t.Limits, t.RateLimit = cur[i].Plan, cur[i].Limits, cur[i].RateLimit
			} else {
				t.Plan, t.Limits, t.RateLimit = limits.Free, limits.Overrides{}, tenant.RateLimit{}
			}
			// A worker an owner names is one of their own data sets
			// (checked with the data sets) or the one the tenant already
			// has: any other name could be another owner's backend, taken
			// before its tenant exists.
			_, isCSV := DatasetOf(t.WorkerName)
			if !isCSV && (i < 0 || t.WorkerName != cur[i].WorkerName) {
				return nil, fmt.Errorf("%w: tenant %q: an owner publishes data sets (workerName csv:<name>); other workers are assigned by the platform admin", errForbidden, slug)
			}
			for _, o := range cur {
				if o.Slug != slug && o.WorkerName == t.WorkerName && o.OwnerUserID != p.userID {
					return nil, fmt.Errorf("%w: worker %q serves another owner's tenant", errForbidden, t.WorkerName)
				}
			}
		}
		created = i < 0
		out := append([]tenant.Tenant(nil), cur...)
		if created {
			return append(out, t), nil
		}
		out[i] = t
		return out, nil
	}, &t)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	stored, _ := d.Lookup(slug)
	w.Header().Set("X-Directory-Version", Version(d))
	writeJSON(w, status, stored)
}

// checkWorker applies the rules of worker names: a csv: worker must name an
// existing data set, and an owner's must be one of their own data sets.
func (h *AdminHandler) checkWorker(ctx context.Context, p principal, t tenant.Tenant) error {
	if h.cfg.Datasets == nil {
		return nil
	}
	name, isCSV := DatasetOf(t.WorkerName)
	if !isCSV {
		if !p.admin && len(t.WorkerName) >= len(DatasetWorkerPrefix) && t.WorkerName[:len(DatasetWorkerPrefix)] == DatasetWorkerPrefix {
			return &tenant.ValidationError{Tenant: t.Slug, Field: "workerName", Reason: fmt.Sprintf("%q does not name a data set (csv:<name>)", clip(t.WorkerName))}
		}
		return nil
	}
	ds, err := h.cfg.Datasets.StatDataset(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return &tenant.ValidationError{Tenant: t.Slug, Field: "workerName", Reason: fmt.Sprintf("data set %q does not exist; upload it first (PUT /__platform/datasets/%s)", name, name)}
	}
	if err != nil {
		return err
	}
	if !p.owns(ds.OwnerUserID) {
		return fmt.Errorf("%w: data set %q belongs to another owner", errForbidden, name)
	}
	return nil
}

func (h *AdminHandler) deleteTenant(w http.ResponseWriter, r *http.Request, rid string, p principal, slug string) {
	var removed tenant.Tenant
	d, err := h.change(r.Context(), p, "delete", slug, func(cur []tenant.Tenant) ([]tenant.Tenant, error) {
		i := index(cur, slug)
		if i < 0 {
			return nil, fmt.Errorf("%w: no tenant %q", ErrNotFound, slug)
		}
		if !p.owns(cur[i].OwnerUserID) {
			return nil, fmt.Errorf("%w: tenant %q belongs to another owner", errForbidden, slug)
		}
		removed = cur[i]
		out := append([]tenant.Tenant(nil), cur[:i]...)
		return append(out, cur[i+1:]...), nil
	}, nil)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	w.Header().Set("X-Directory-Version", Version(d))
	writeJSON(w, http.StatusOK, struct {
		OK      bool          `json:"ok"`
		Deleted tenant.Tenant `json:"deleted"`
	}{true, removed})
}
