package cloudflare_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

var testSecret = []byte("test-secret-0123456789abcdef")

func sampleSigned(now time.Time) cloudflare.Signed {
	return cloudflare.Signed{
		Timestamp:  now.Unix(),
		RequestID:  "6f1c1b0e-3a53-4a4e-9f8e-0d6c1f0b9a11",
		TenantID:   "acme",
		WorkerName: "tenant-acme-worker",
		Plan:       "pro",
		Limits:     limits.Limits{CPUMs: 200, SubRequests: 50},
		Method:     http.MethodPost,
		Host:       "gateway.example:8080",
		Path:       "/v1/items?x=1&y=%2F",
	}
}

type vectorValues struct {
	Timestamp   string `json:"timestamp"`
	RequestID   string `json:"requestId"`
	Tenant      string `json:"tenant"`
	Worker      string `json:"worker"`
	Plan        string `json:"plan"`
	CPUMs       string `json:"cpuMs"`
	SubRequests string `json:"subRequests"`
	Method      string `json:"method"`
	Host        string `json:"host"`
	Path        string `json:"path"`
}

type vector struct {
	Secret    string       `json:"secret"`
	Values    vectorValues `json:"values"`
	Base      string       `json:"base"`
	Signature string       `json:"signature"`
}

// TestSignatureVectors pins the signature that the JS tests check too
// (worker/test/cases.test.mjs), so the Go fetcher and the dispatch worker
// sign the same text the same way.
func TestSignatureVectors(t *testing.T) {
	const path = "testdata/signature_vectors.json"
	s1 := sampleSigned(time.Unix(1767225600, 0))
	s2 := cloudflare.Signed{Timestamp: 1, RequestID: "r", TenantID: "", WorkerName: "w é", Plan: "free",
		Limits: limits.Limits{CPUMs: 50, SubRequests: 10}, Method: "GET", Host: "", Path: "/"}
	var got struct {
		Comment string   `json:"comment"`
		Vectors []vector `json:"vectors"`
	}
	got.Comment = "HMAC-SHA256 signatures of gateway requests; written by go test ./adapters/cloudflare -run TestSignatureVectors -update, checked by the Go and the JS tests."
	for _, c := range []struct {
		secret string
		s      cloudflare.Signed
	}{{string(testSecret), s1}, {"another secret of some length", s2}} {
		got.Vectors = append(got.Vectors, vector{
			Secret: c.secret,
			Values: vectorValues{strconv.FormatInt(c.s.Timestamp, 10), c.s.RequestID, c.s.TenantID, c.s.WorkerName, c.s.Plan,
				strconv.Itoa(c.s.Limits.CPUMs), strconv.Itoa(c.s.Limits.SubRequests), c.s.Method, c.s.Host, c.s.Path},
			Base:      c.s.Base(),
			Signature: cloudflare.Sign([]byte(c.secret), c.s),
		})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	require.NoError(t, enc.Encode(got))
	if *update {
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.JSONEq(t, string(want), buf.String())
}

func TestVerify(t *testing.T) {
	now := time.Unix(1767225600, 0)
	s := sampleSigned(now)
	signed := func() http.Header {
		h := http.Header{}
		cloudflare.SetHeaders(h, testSecret, s)
		return h
	}
	got, err := cloudflare.Verify(signed(), http.MethodPost, testSecret, now.Add(299*time.Second), 0)
	require.NoError(t, err)
	require.Equal(t, s, got)

	cases := map[string]struct {
		mutate func(h http.Header)
		method string
		at     time.Time
		secret []byte
	}{
		"unsigned":       {mutate: func(h http.Header) { h.Del(cloudflare.HeaderSignature) }},
		"worker altered": {mutate: func(h http.Header) { h.Set(cloudflare.HeaderWorker, "tenant-evil") }},
		"limits raised":  {mutate: func(h http.Header) { h.Set(cloudflare.HeaderCPUMs, "600") }},
		"zero padded":    {mutate: func(h http.Header) { h.Set(cloudflare.HeaderCPUMs, "0200") }},
		"path altered":   {mutate: func(h http.Header) { h.Set(cloudflare.HeaderPath, "/admin") }},
		"host altered":   {mutate: func(h http.Header) { h.Set(cloudflare.HeaderHost, "other.example") }},
		"request id":     {mutate: func(h http.Header) { h.Set(cloudflare.HeaderRequestID, "other") }},
		"bad timestamp":  {mutate: func(h http.Header) { h.Set(cloudflare.HeaderTimestamp, "soon") }},
		"method altered": {method: http.MethodDelete},
		"stale":          {at: now.Add(301 * time.Second)},
		"from future":    {at: now.Add(-301 * time.Second)},
		"wrong secret":   {secret: []byte("another-secret-0123456789")},
		"bad hex":        {mutate: func(h http.Header) { h.Set(cloudflare.HeaderSignature, "v1=zz") }},
		"other version":  {mutate: func(h http.Header) { h.Set(cloudflare.HeaderSignature, "v2="+h.Get(cloudflare.HeaderSignature)[3:]) }},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h := signed()
			if c.mutate != nil {
				c.mutate(h)
			}
			method, at, secret := http.MethodPost, now, testSecret
			if c.method != "" {
				method = c.method
			}
			if !c.at.IsZero() {
				at = c.at
			}
			if c.secret != nil {
				secret = c.secret
			}
			_, err := cloudflare.Verify(h, method, secret, at, cloudflare.DefaultMaxSkew)
			require.ErrorIs(t, err, cloudflare.ErrBadSignature)
		})
	}
}

func TestSignedFromPayload(t *testing.T) {
	p := &dispatch.Payload{RequestID: "r1", TenantID: "acme", WorkerName: "w", Plan: "pro",
		Limits: limits.Limits{CPUMs: 200, SubRequests: 50}, Method: "GET", Host: "h", Path: "/a%2Fb", Query: "q=1"}
	s := cloudflare.SignedFromPayload(p, time.Unix(10, 0))
	require.Equal(t, "/a%2Fb?q=1", s.Path)
	require.Equal(t, int64(10), s.Timestamp)
	p.Path, p.Query = "", ""
	require.Equal(t, "/", cloudflare.SignedFromPayload(p, time.Unix(10, 0)).Path)
}

// FuzzVerify feeds Verify arbitrary header values: it must never panic and
// must accept only what it signed itself.
func FuzzVerify(f *testing.F) {
	f.Add("1767225600", "v1=00", "200", "50", "/x", "w")
	f.Add("", "", "", "", "", "")
	f.Add("99999999999999", "v1=zz", "-1", "0x10", "x", "")
	f.Fuzz(func(t *testing.T, ts, sig, cpu, sub, path, worker string) {
		h := http.Header{}
		h.Set(cloudflare.HeaderTimestamp, ts)
		h.Set(cloudflare.HeaderSignature, sig)
		h.Set(cloudflare.HeaderCPUMs, cpu)
		h.Set(cloudflare.HeaderSubrequests, sub)
		h.Set(cloudflare.HeaderPath, path)
		h.Set(cloudflare.HeaderWorker, worker)
		h.Set(cloudflare.HeaderRequestID, "r")
		_, err := cloudflare.Verify(h, "GET", testSecret, time.Unix(1767225600, 0), 0)
		if err != nil && !errors.Is(err, cloudflare.ErrBadSignature) {
			t.Fatalf("unexpected error %v", err)
		}
		if err == nil {
			t.Fatalf("accepted a forged signature %q", sig)
		}
	})
}
