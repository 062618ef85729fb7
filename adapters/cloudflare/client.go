package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is the Cloudflare REST API.
const DefaultBaseURL = "https://api.cloudflare.com/client/v4"

// DefaultCompatibilityDate is the compatibility date uploads use when none
// is given.
const DefaultCompatibilityDate = "2025-09-01"

// MaxTags is the most tags Cloudflare keeps on one script.
const MaxTags = 8

// Config configures a Client.
type Config struct {
	// AccountID is the Cloudflare account (required).
	AccountID string
	// APIToken is an API token with Workers Scripts Write (required). It is
	// sent as "Authorization: Bearer <token>".
	APIToken string
	// BaseURL is the API root (empty: DefaultBaseURL). Tests point it at a
	// local server.
	BaseURL string
	// HTTPClient sends the requests (nil: a client with a 60 s timeout).
	HTTPClient *http.Client
}

// Client is a small client of the Cloudflare REST API for Workers for
// Platforms. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base string
	hc   *http.Client
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg Config) (*Client, error) {
	if cfg.AccountID == "" {
		return nil, errors.New("cloudflare: Config.AccountID is required")
	}
	if cfg.APIToken == "" {
		return nil, errors.New("cloudflare: Config.APIToken is required")
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cloudflare: Config.BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	return &Client{cfg: cfg, base: base, hc: hc}, nil
}

// Binding is one entry of a script's metadata bindings. Type is the
// Cloudflare binding type ("plain_text", "secret_text",
// "dispatch_namespace", "kv_namespace", ...); the other fields are used as
// the type needs.
type Binding struct {
	Type        string `json:"type"`
	Name        string `json:"name"`
	Text        string `json:"text,omitempty"`         // plain_text, secret_text
	Namespace   string `json:"namespace,omitempty"`    // dispatch_namespace
	NamespaceID string `json:"namespace_id,omitempty"` // kv_namespace
}

// PlainText returns a plain_text binding.
func PlainText(name, text string) Binding { return Binding{Type: "plain_text", Name: name, Text: text} }

// SecretText returns a secret_text binding.
func SecretText(name, text string) Binding {
	return Binding{Type: "secret_text", Name: name, Text: text}
}

// DispatchNamespace returns a dispatch_namespace binding.
func DispatchNamespace(name, namespace string) Binding {
	return Binding{Type: "dispatch_namespace", Name: name, Namespace: namespace}
}

// Metadata is the "metadata" part of a multipart script upload.
type Metadata struct {
	MainModule         string    `json:"main_module"`
	CompatibilityDate  string    `json:"compatibility_date,omitempty"`
	CompatibilityFlags []string  `json:"compatibility_flags,omitempty"`
	Bindings           []Binding `json:"bindings"`
	Tags               []string  `json:"tags,omitempty"`
}

// Script is a script as the API describes it.
type Script struct {
	ID                string    `json:"id"`
	Tags              []string  `json:"tags,omitempty"`
	ETag              string    `json:"etag,omitempty"`
	CompatibilityDate string    `json:"compatibility_date,omitempty"`
	CreatedOn         time.Time `json:"created_on,omitzero"`
	ModifiedOn        time.Time `json:"modified_on,omitzero"`
}

// UserWorker is a tenant's worker to upload to a dispatch namespace.
type UserWorker struct {
	Namespace  string // dispatch namespace (required)
	ScriptName string // script name, the tenant's workerName (required)
	// ModuleName is the module's part name and main_module (empty:
	// "worker.js").
	ModuleName string
	Module     []byte // the ES module source (required)
	// CompatibilityDate (empty: DefaultCompatibilityDate).
	CompatibilityDate  string
	CompatibilityFlags []string
	Bindings           []Binding
	// Tags label the script for ListScriptsByTag and DeleteScriptsByTag,
	// at most MaxTags, without ',' or '&'.
	Tags []string
}

// UploadUserWorker uploads (creates or replaces) a tenant worker in a
// dispatch namespace:
// PUT /accounts/{account_id}/workers/dispatch/namespaces/{namespace}/scripts/{script_name}.
func (c *Client) UploadUserWorker(ctx context.Context, w UserWorker) (*Script, error) {
	if w.Namespace == "" || w.ScriptName == "" {
		return nil, errors.New("cloudflare: UserWorker.Namespace and ScriptName are required")
	}
	if err := checkTags(w.Tags); err != nil {
		return nil, err
	}
	p := "/accounts/" + seg(c.cfg.AccountID) + "/workers/dispatch/namespaces/" + seg(w.Namespace) + "/scripts/" + seg(w.ScriptName)
	return c.uploadModule(ctx, p, w.ModuleName, w.Module, Metadata{
		CompatibilityDate:  w.CompatibilityDate,
		CompatibilityFlags: w.CompatibilityFlags,
		Bindings:           w.Bindings,
		Tags:               w.Tags,
	})
}

// DispatchWorker is the dispatch worker to upload as an account script.
type DispatchWorker struct {
	ScriptName string // required
	// Namespace is the dispatch namespace bound as DISPATCHER (required).
	Namespace string
	// DirectoryJSON becomes the plain_text TENANT_DIRECTORY_JSON (edge
	// mode); empty leaves it out.
	DirectoryJSON string
	// Secret becomes the secret_text DISPATCH_SECRET (gateway mode); empty
	// leaves it out.
	Secret string
	// Mode becomes DISPATCH_MODE ("edge", "gateway", "both"); empty leaves
	// the worker's default.
	Mode string
	// Module is the script (nil: DispatchWorkerScript()).
	Module            []byte
	CompatibilityDate string
	// Extra bindings, added after the ones above.
	Bindings []Binding
	Tags     []string
}

// UploadDispatchWorker uploads the dispatch worker with its bindings:
// PUT /accounts/{account_id}/workers/scripts/{script_name}.
func (c *Client) UploadDispatchWorker(ctx context.Context, w DispatchWorker) (*Script, error) {
	if w.ScriptName == "" || w.Namespace == "" {
		return nil, errors.New("cloudflare: DispatchWorker.ScriptName and Namespace are required")
	}
	if err := checkTags(w.Tags); err != nil {
		return nil, err
	}
	b := []Binding{DispatchNamespace("DISPATCHER", w.Namespace)}
	if w.DirectoryJSON != "" {
		b = append(b, PlainText("TENANT_DIRECTORY_JSON", w.DirectoryJSON))
	}
	if w.Secret != "" {
		b = append(b, SecretText("DISPATCH_SECRET", w.Secret))
	}
	if w.Mode != "" {
		b = append(b, PlainText("DISPATCH_MODE", w.Mode))
	}
	b = append(b, w.Bindings...)
	mod := w.Module
	if mod == nil {
		mod = dispatchWorkerJS
	}
	p := "/accounts/" + seg(c.cfg.AccountID) + "/workers/scripts/" + seg(w.ScriptName)
	return c.uploadModule(ctx, p, DispatchWorkerModuleName, mod, Metadata{CompatibilityDate: w.CompatibilityDate, Bindings: b, Tags: w.Tags})
}

// ListScriptsByTag lists the scripts of a dispatch namespace that carry tag:
// GET .../dispatch/namespaces/{namespace}/scripts?tags=<tag>:yes.
func (c *Client) ListScriptsByTag(ctx context.Context, namespace, tag string) ([]Script, error) {
	if err := checkTags([]string{tag}); err != nil || tag == "" {
		return nil, fmt.Errorf("cloudflare: bad tag %q", tag)
	}
	p := "/accounts/" + seg(c.cfg.AccountID) + "/workers/dispatch/namespaces/" + seg(namespace) + "/scripts?tags=" + url.QueryEscape(tag+":yes")
	var out []Script
	if err := c.do(ctx, http.MethodGet, p, "", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteScriptsByTag deletes every script of a dispatch namespace that
// carries tag: DELETE .../dispatch/namespaces/{namespace}/scripts?tags=<tag>:yes.
func (c *Client) DeleteScriptsByTag(ctx context.Context, namespace, tag string) error {
	if err := checkTags([]string{tag}); err != nil || tag == "" {
		return fmt.Errorf("cloudflare: bad tag %q", tag)
	}
	p := "/accounts/" + seg(c.cfg.AccountID) + "/workers/dispatch/namespaces/" + seg(namespace) + "/scripts?tags=" + url.QueryEscape(tag+":yes")
	return c.do(ctx, http.MethodDelete, p, "", nil, nil)
}

// DeleteUserWorker deletes one script of a dispatch namespace.
func (c *Client) DeleteUserWorker(ctx context.Context, namespace, scriptName string) error {
	p := "/accounts/" + seg(c.cfg.AccountID) + "/workers/dispatch/namespaces/" + seg(namespace) + "/scripts/" + seg(scriptName)
	return c.do(ctx, http.MethodDelete, p, "", nil, nil)
}

// uploadModule sends a multipart upload: a "metadata" JSON part and the
// module part, named after the module, of type application/javascript+module.
func (c *Client) uploadModule(ctx context.Context, path, moduleName string, module []byte, md Metadata) (*Script, error) {
	if len(module) == 0 {
		return nil, errors.New("cloudflare: the module is empty")
	}
	if moduleName == "" {
		moduleName = "worker.js"
	}
	if md.CompatibilityDate == "" {
		md.CompatibilityDate = DefaultCompatibilityDate
	}
	if md.Bindings == nil {
		md.Bindings = []Binding{}
	}
	md.MainModule = moduleName
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mdJSON, err := json.Marshal(md)
	if err != nil {
		return nil, err
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", `form-data; name="metadata"; filename="metadata.json"`)
	h.Set("Content-Type", "application/json")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return nil, err
	}
	pw.Write(mdJSON)
	h = make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, moduleName, moduleName))
	h.Set("Content-Type", "application/javascript+module")
	if pw, err = mw.CreatePart(h); err != nil {
		return nil, err
	}
	pw.Write(module)
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var out Script
	if err := c.do(ctx, http.MethodPut, path, mw.FormDataContentType(), buf.Bytes(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// APIError is an unsuccessful answer of the Cloudflare API: the envelope's
// errors (success:false), or a status without a readable envelope.
type APIError struct {
	Method, Path string
	Status       int
	Errors       []APIMessage
}

// APIMessage is one entry of an envelope's errors or messages.
type APIMessage struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloudflare API %s %s: HTTP %d", e.Method, e.Path, e.Status)
	for i, m := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (code %d)", m.Message, m.Code)
	}
	return b.String()
}

// HasCode reports whether the API answered with the given error code.
func (e *APIError) HasCode(code int) bool {
	for _, m := range e.Errors {
		if m.Code == code {
			return true
		}
	}
	return false
}

type envelope struct {
	Success  bool            `json:"success"`
	Errors   []APIMessage    `json:"errors"`
	Messages []APIMessage    `json:"messages"`
	Result   json.RawMessage `json:"result"`
}

const maxAPIResponse = 16 << 20

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("cloudflare API %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIToken)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cloudflare API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	if err != nil {
		return fmt.Errorf("cloudflare API %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 300 && len(bytes.TrimSpace(raw)) == 0 {
		return nil // some deletes answer with no body at all
	}
	var env envelope
	jerr := json.Unmarshal(raw, &env)
	if jerr != nil || !env.Success || resp.StatusCode >= 300 {
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode, Errors: env.Errors}
		if jerr == nil && env.Success && len(e.Errors) == 0 {
			e.Errors = []APIMessage{{Message: "success:true with an error status"}}
		}
		if len(e.Errors) == 0 {
			msg := strings.TrimSpace(string(raw))
			if len(msg) > 200 {
				msg = msg[:200] + "..."
			}
			if msg == "" {
				msg = http.StatusText(resp.StatusCode)
			}
			e.Errors = []APIMessage{{Message: "unreadable answer: " + msg}}
		}
		return e
	}
	if out != nil && len(env.Result) > 0 && string(env.Result) != "null" {
		if err := json.Unmarshal(env.Result, out); err != nil {
			return fmt.Errorf("cloudflare API %s %s: decoding the result: %w", method, path, err)
		}
	}
	return nil
}

func seg(s string) string { return url.PathEscape(s) }

func checkTags(tags []string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("cloudflare: %d tags, at most %d allowed", len(tags), MaxTags)
	}
	for _, t := range tags {
		if strings.ContainsAny(t, ",&") {
			return fmt.Errorf("cloudflare: tag %q contains ',' or '&'", t)
		}
	}
	return nil
}
