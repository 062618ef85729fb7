package cloudflare

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

// Headers of a signed gateway request. The dispatch worker strips every
// X-Dispatch-* header before the tenant worker sees the request.
const (
	HeaderRequestID   = "X-Request-Id"
	HeaderTimestamp   = "X-Dispatch-Timestamp"
	HeaderTenant      = "X-Dispatch-Tenant"
	HeaderWorker      = "X-Dispatch-Worker"
	HeaderPlan        = "X-Dispatch-Plan"
	HeaderCPUMs       = "X-Dispatch-Cpu-Ms"
	HeaderSubrequests = "X-Dispatch-Subrequests"
	HeaderHost        = "X-Dispatch-Host"
	HeaderPath        = "X-Dispatch-Path"
	HeaderSignature   = "X-Dispatch-Signature"
	// HeaderError marks an answer the dispatch worker made itself; its
	// value is the error code of the JSON body.
	HeaderError = "X-Dispatch-Error"
)

// SignatureVersion prefixes the signature: "v1=<hex HMAC-SHA256>".
const SignatureVersion = "v1"

// DefaultMaxSkew is how far a signed request's timestamp may be from the
// dispatch worker's clock.
const DefaultMaxSkew = 300 * time.Second

// Signed is the routing decision the gateway signs: everything the dispatch
// worker acts on. Path is the escaped path the tenant worker sees, with
// "?query" when there is one.
type Signed struct {
	Timestamp  int64 // Unix seconds
	RequestID  string
	TenantID   string
	WorkerName string
	Plan       string
	Limits     limits.Limits
	Method     string
	Host       string
	Path       string
}

// SignedFromPayload builds the values to sign for a dispatch payload at now.
func SignedFromPayload(p *dispatch.Payload, now time.Time) Signed {
	path := p.Path
	if path == "" {
		path = "/"
	}
	if p.Query != "" {
		path += "?" + p.Query
	}
	return Signed{
		Timestamp:  now.Unix(),
		RequestID:  p.RequestID,
		TenantID:   p.TenantID,
		WorkerName: p.WorkerName,
		Plan:       p.Plan,
		Limits:     p.Limits,
		Method:     p.Method,
		Host:       p.Host,
		Path:       path,
	}
}

// Base returns the exact text the HMAC covers: the version and the values,
// one per line. Header values cannot hold a newline, so the encoding is
// unambiguous.
func (s Signed) Base() string {
	return strings.Join([]string{
		SignatureVersion,
		strconv.FormatInt(s.Timestamp, 10),
		s.RequestID,
		s.TenantID,
		s.WorkerName,
		s.Plan,
		strconv.Itoa(s.Limits.CPUMs),
		strconv.Itoa(s.Limits.SubRequests),
		s.Method,
		s.Host,
		s.Path,
	}, "\n")
}

// Sign returns the signature header value of s under secret.
func Sign(secret []byte, s Signed) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s.Base()))
	return SignatureVersion + "=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is wrapped by every error of Verify.
var ErrBadSignature = errors.New("cloudflare: bad request signature")

// SetHeaders writes s and its signature into h, replacing any X-Dispatch-*
// header already there.
func SetHeaders(h http.Header, secret []byte, s Signed) {
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Dispatch-") {
			delete(h, k)
		}
	}
	h.Set(HeaderRequestID, s.RequestID)
	h.Set(HeaderTimestamp, strconv.FormatInt(s.Timestamp, 10))
	h.Set(HeaderTenant, s.TenantID)
	h.Set(HeaderWorker, s.WorkerName)
	h.Set(HeaderPlan, s.Plan)
	h.Set(HeaderCPUMs, strconv.Itoa(s.Limits.CPUMs))
	h.Set(HeaderSubrequests, strconv.Itoa(s.Limits.SubRequests))
	h.Set(HeaderHost, s.Host)
	h.Set(HeaderPath, s.Path)
	h.Set(HeaderSignature, Sign(secret, s))
}

// Verify checks the signed headers of a request as the dispatch worker does
// (the Go twin of its verifySignedRequest, for tests and for Go-hosted
// dispatch workers): the signature must match, the timestamp must be within
// maxSkew of now, the limits positive and the path absolute. It returns the
// signed values; errors wrap ErrBadSignature.
func Verify(h http.Header, method string, secret []byte, now time.Time, maxSkew time.Duration) (Signed, error) {
	sig := h.Get(HeaderSignature)
	if sig == "" {
		return Signed{}, fmt.Errorf("%w: the request is not signed", ErrBadSignature)
	}
	ts := h.Get(HeaderTimestamp)
	if !allDigits(ts, 12) {
		return Signed{}, fmt.Errorf("%w: missing or malformed timestamp", ErrBadSignature)
	}
	t, _ := strconv.ParseInt(ts, 10, 64)
	skew := now.Unix() - t
	if skew < 0 {
		skew = -skew
	}
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	if time.Duration(skew)*time.Second > maxSkew {
		return Signed{}, fmt.Errorf("%w: the signature is stale (%d s from now)", ErrBadSignature, skew)
	}
	s := Signed{
		Timestamp:  t,
		RequestID:  h.Get(HeaderRequestID),
		TenantID:   h.Get(HeaderTenant),
		WorkerName: h.Get(HeaderWorker),
		Plan:       h.Get(HeaderPlan),
		Method:     method,
		Host:       h.Get(HeaderHost),
		Path:       h.Get(HeaderPath),
	}
	cpu, sub := h.Get(HeaderCPUMs), h.Get(HeaderSubrequests)
	// Sign over the header text as received, so "050" cannot pass as "50".
	base := strings.Join([]string{SignatureVersion, ts, s.RequestID, s.TenantID, s.WorkerName, s.Plan, cpu, sub, s.Method, s.Host, s.Path}, "\n")
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(base))
	want := SignatureVersion + "=" + hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return Signed{}, fmt.Errorf("%w: the signature does not match the request", ErrBadSignature)
	}
	if !positiveInt(cpu) || !positiveInt(sub) {
		return Signed{}, fmt.Errorf("%w: signed limits are not positive integers", ErrBadSignature)
	}
	if s.RequestID == "" || s.WorkerName == "" || !strings.HasPrefix(s.Path, "/") {
		return Signed{}, fmt.Errorf("%w: signed request lacks a request id, worker or path", ErrBadSignature)
	}
	s.Limits.CPUMs, _ = strconv.Atoi(cpu)
	s.Limits.SubRequests, _ = strconv.Atoi(sub)
	return s, nil
}

func allDigits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// positiveInt matches the worker's /^[1-9][0-9]{0,9}$/ (and fits an int).
func positiveInt(s string) bool {
	if !allDigits(s, 10) || s[0] == '0' {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n <= 1<<31-1
}
