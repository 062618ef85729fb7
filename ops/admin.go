package ops

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/tenant"
)

// PlatformPrefix is the path prefix of the platform routes.
const PlatformPrefix = "/__platform/"

// AdminConfig configures the admin API. Registry and Ledger are required.
type AdminConfig struct {
	// AdminToken is the platform admin's bearer token. Empty refuses every
	// admin request (owners' keys still work).
	AdminToken string
	// Registry is the directory in force, swapped on every change.
	Registry *tenant.Registry
	// Store persists the directory (nil: changes live in this process
	// only). A store that implements TenantUpdater makes read, change and
	// save one transaction, so concurrent changes on several replicas never
	// lose one another; a plain tenant.Store is read, changed and saved
	// whole, so of two replicas changing the directory at the same instant
	// the last save wins (changes on one replica are serialized).
	Store tenant.Store
	// Ledger audits every change (kind directory_swap) and answers the
	// payment status and chain verification routes.
	Ledger *ledger.Ledger
	// Accounts holds users and owners' API keys (nil: only the admin token
	// is accepted and the /users and /keys routes answer 404).
	Accounts *Accounts
	// Datasets stores uploaded data sets (nil: the /datasets routes answer
	// 404 and csv: worker names are not checked).
	Datasets Datasets
	// Validate, when set, checks every directory a change would put in
	// force, after tenant validation and before it is saved (for example
	// the payment stage's CheckDirectory: schemes and networks it can
	// serve). Its error is answered 400 bad_request and nothing changes.
	Validate func(d *tenant.Directory) error
	// MaxDatasetSize bounds an upload; <= 0 means DefaultMaxDatasetSize.
	MaxDatasetSize int64
	// Next serves the platform routes this handler does not own (health,
	// events, analytics); nil answers them 404.
	Next http.Handler
	// Logger receives internal errors; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AdminHandler serves the operations routes of DESIGN section 17 under
// /__platform/:
//
//	GET    /__platform/tenants              admin: every tenant; owner: their own
//	GET    /__platform/tenants/<slug>       one tenant
//	PUT    /__platform/tenants/<slug>       create or replace one tenant (registry-form JSON)
//	DELETE /__platform/tenants/<slug>       remove one tenant
//	POST   /__platform/users                admin: {"id","name"} -> 201
//	POST   /__platform/users/<id>/keys      admin: 201 {"id","key"} (the key is shown once)
//	DELETE /__platform/keys/<key id>        admin: revoke a key, at once on every replica
//	PUT    /__platform/datasets/<name>      upload a CSV data set (body: the file)
//	GET    /__platform/datasets/<name>      its metadata
//	DELETE /__platform/datasets/<name>      remove it (not while a tenant serves it)
//	GET    /__platform/payments/<key>       public: the ledger's record of a payment
//	GET    /__platform/ledger/verify        admin: walk the audit chain
//
// Every other path goes to AdminConfig.Next. Tenant and data set routes
// take the admin token or an owner's API key (Authorization: Bearer ...);
// an owner manages only their own tenants and data sets (403 forbidden
// otherwise) and ownerUserId is always set from the key. Errors are JSON in
// the dispatcher's shape {"ok":false,"error","message","requestId"}.
type AdminHandler struct {
	cfg       AdminConfig
	log       *slog.Logger
	now       func() time.Time
	tokenHash [32]byte
	maxData   int64
	mu        sync.Mutex // serializes directory and data set changes
}

var _ http.Handler = (*AdminHandler)(nil)

// NewAdminHandler validates cfg and returns the handler.
func NewAdminHandler(cfg AdminConfig) (*AdminHandler, error) {
	if cfg.Registry == nil {
		return nil, errors.New("ops: NewAdminHandler: Registry is required")
	}
	if cfg.Ledger == nil {
		return nil, errors.New("ops: NewAdminHandler: Ledger is required (changes are audited)")
	}
	h := &AdminHandler{cfg: cfg, log: cfg.Logger, now: cfg.Now, maxData: cfg.MaxDatasetSize}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.maxData <= 0 {
		h.maxData = DefaultMaxDatasetSize
	}
	h.tokenHash = sha256.Sum256([]byte(cfg.AdminToken))
	return h, nil
}

// Owns reports whether the handler serves path (an escaped URL path), so
// an embedding server can route only these paths to it.
func (h *AdminHandler) Owns(path string) bool {
	rest, ok := strings.CutPrefix(path, PlatformPrefix)
	if !ok {
		return false
	}
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "tenants", "payments", "ledger":
		return true
	case "users", "keys":
		return h.cfg.Accounts != nil
	case "datasets":
		return h.cfg.Datasets != nil
	}
	return false
}

// principal is who makes a request: the admin, or an owner through a key.
type principal struct {
	admin  bool
	userID string
}

// actor is the audit trail's name for p.
func (p principal) actor() string {
	if p.admin {
		return "admin"
	}
	return "user:" + p.userID
}

// owns reports whether p may manage something owned by owner.
func (p principal) owns(owner string) bool { return p.admin || owner == p.userID }

// ServeHTTP implements http.Handler.
func (h *AdminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	if !h.Owns(path) {
		if h.cfg.Next != nil {
			h.cfg.Next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no platform route "+clip(r.URL.Path), requestID(w, r))
		return
	}
	rid := requestID(w, r)
	w.Header().Set("Cache-Control", "no-store")
	segs := strings.Split(strings.TrimPrefix(path, PlatformPrefix), "/")
	switch segs[0] {
	case "payments":
		if len(segs) < 2 {
			h.notFound(w, r, rid)
			return
		}
		if !allow(w, r, rid, http.MethodGet, http.MethodHead) {
			return
		}
		raw := strings.Join(segs[1:], "/")
		key, err := url.PathUnescape(raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "the payment key is not a valid escaped path segment", rid)
			return
		}
		h.payment(w, r, rid, key)
		return
	}
	p, ok := h.authenticate(w, r, rid)
	if !ok {
		return
	}
	switch {
	case segs[0] == "tenants" && len(segs) == 1:
		if allow(w, r, rid, http.MethodGet, http.MethodHead) {
			h.listTenants(w, r, rid, p)
		}
	case segs[0] == "tenants" && len(segs) == 2:
		slug := segs[1]
		if !tenant.ValidSlug(slug) {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("slug %q does not match ^[a-z0-9][a-z0-9-]{0,62}$", clip(slug)), rid)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getTenant(w, r, rid, p, slug)
		case http.MethodPut:
			h.putTenant(w, r, rid, p, slug)
		case http.MethodDelete:
			h.deleteTenant(w, r, rid, p, slug)
		default:
			allow(w, r, rid, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete)
		}
	case segs[0] == "datasets" && len(segs) == 2:
		name := segs[1]
		if !tenant.ValidSlug(name) {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("data set name %q does not match ^[a-z0-9][a-z0-9-]{0,62}$", clip(name)), rid)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getDataset(w, r, rid, p, name)
		case http.MethodPut:
			h.putDataset(w, r, rid, p, name)
		case http.MethodDelete:
			h.deleteDataset(w, r, rid, p, name)
		default:
			allow(w, r, rid, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete)
		}
	case !p.admin:
		// Users, keys and the ledger check are the admin's alone.
		writeError(w, http.StatusForbidden, "forbidden", "this route needs the admin token", rid)
	case segs[0] == "users" && len(segs) == 1:
		if allow(w, r, rid, http.MethodPost) {
			h.createUser(w, r, rid)
		}
	case segs[0] == "users" && len(segs) == 3 && segs[2] == "keys":
		if allow(w, r, rid, http.MethodPost) {
			h.createKey(w, r, rid, segs[1])
		}
	case segs[0] == "keys" && len(segs) == 2:
		if allow(w, r, rid, http.MethodDelete) {
			h.revokeKey(w, r, rid, segs[1])
		}
	case segs[0] == "ledger" && len(segs) == 2 && segs[1] == "verify":
		if allow(w, r, rid, http.MethodGet, http.MethodHead) {
			h.verifyLedger(w, r, rid)
		}
	default:
		h.notFound(w, r, rid)
	}
}

func (h *AdminHandler) notFound(w http.ResponseWriter, r *http.Request, rid string) {
	writeError(w, http.StatusNotFound, "not_found", "no platform route "+clip(r.URL.Path), rid)
}

// allow answers 405 unless r's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, rid string, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here", rid)
	return false
}

// authenticate reads the bearer token: the admin token (compared in
// constant time over SHA-256 digests) or an owner's key, looked up in the
// store on every request so that a revoked key fails at once everywhere.
func (h *AdminHandler) authenticate(w http.ResponseWriter, r *http.Request, rid string) (principal, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if ok && strings.EqualFold(scheme, "Bearer") && token != "" {
		if h.cfg.AdminToken != "" {
			got := sha256.Sum256([]byte(token))
			if subtle.ConstantTimeCompare(got[:], h.tokenHash[:]) == 1 {
				return principal{admin: true}, true
			}
		}
		if h.cfg.Accounts != nil && strings.HasPrefix(token, KeyPrefix) {
			k, err := h.cfg.Accounts.Authenticate(r.Context(), token)
			if err == nil {
				return principal{userID: k.UserID}, true
			}
			if !errors.Is(err, ErrNotFound) {
				h.fail(w, r, rid, err)
				return principal{}, false
			}
		}
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="platform"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", "a valid admin token or owner API key is required (Authorization: Bearer ...)", rid)
	return principal{}, false
}

// Errors the handlers map to statuses in fail, the one table of this file.
var (
	errForbidden = errors.New("forbidden")
	errConflict  = errors.New("conflict")
	errBadBody   = errors.New("bad request body")
	errRejected  = errors.New("directory rejected")
)

// fail maps an error to its status and answers it.
func (h *AdminHandler) fail(w http.ResponseWriter, r *http.Request, rid string, err error) {
	msg := strings.TrimPrefix(err.Error(), "ops: ")
	var ve *tenant.ValidationError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("the body is larger than %d bytes", tooBig.Limit), rid)
	case errors.As(err, &ve):
		writeError(w, http.StatusBadRequest, "bad_request", ve.Error(), rid)
	case errors.Is(err, tenant.ErrInvalidDirectory), errors.Is(err, ErrInvalid), errors.Is(err, errBadBody), errors.Is(err, ledger.ErrInvalid),
		errors.Is(err, errRejected):
		writeError(w, http.StatusBadRequest, "bad_request", msg, rid)
	case errors.Is(err, errForbidden):
		writeError(w, http.StatusForbidden, "forbidden", msg, rid)
	case errors.Is(err, ErrNotFound), errors.Is(err, ledger.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", msg, rid)
	case errors.Is(err, ErrDuplicate), errors.Is(err, errConflict):
		writeError(w, http.StatusConflict, "conflict", msg, rid)
	case errors.Is(err, ledger.ErrUnsupported):
		writeError(w, http.StatusNotImplemented, "not_implemented", "the ledger store cannot look payments up by key", rid)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the store did not answer in time; nothing was changed", rid)
	default:
		h.log.LogAttrs(r.Context(), slog.LevelError, "admin route failed",
			slog.String("path", r.URL.Path), slog.String("requestId", rid), slog.String("error", err.Error()))
		writeError(w, http.StatusInternalServerError, "internal_error", "the request could not be completed", rid)
	}
}

// requestID keeps an incoming UUID X-Request-Id or makes one, and sets it
// on the answer.
func requestID(w http.ResponseWriter, r *http.Request) string {
	rid := r.Header.Get("X-Request-Id")
	if u, err := uuid.Parse(rid); err != nil || len(rid) != 36 {
		rid = uuid.NewString()
	} else {
		rid = u.String()
	}
	w.Header().Set("X-Request-Id", rid)
	return rid
}

// writeError renders every error of this package, in the dispatcher's JSON
// error shape.
// writeError answers through the dispatcher's one error renderer: the
// status comes from its table for code (status only documents the call).
func writeError(w http.ResponseWriter, status int, code, msg, rid string) {
	_ = status
	w.Header().Set("X-Content-Type-Options", "nosniff")
	dispatch.WriteError(w, dispatch.Errorf(code, "%s", msg), rid)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(dispatch.ErrorBody{Error: "internal_error", Message: "encoding failed", RequestID: w.Header().Get("X-Request-Id")})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
