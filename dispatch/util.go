package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/402claw/dispatcher/metrics"
)

func unescapePath(p string) (string, error) { return url.PathUnescape(p) }

// HashCaller returns the stored form of a caller identity
// (metrics.HashCaller: SHA-256 based). Raw identities (agent ids, API keys,
// IPs) are never stored.
func HashCaller(identity string) string { return metrics.HashCaller(identity) }

// DefaultIdentity is Identity with no trusted proxies.
func DefaultIdentity(r *http.Request) string { return Identity(r, nil) }

// Identity returns the caller identity of r, first present: X-Agent-Id,
// X-Caller-Id, a hash of X-Api-Key, the client IP, else "anonymous". The
// client IP is the connection's peer; when that peer is one of the trusted
// proxies, X-Forwarded-For is read from the right, skipping trusted hops,
// and the first untrusted address is the client.
func Identity(r *http.Request, trusted []netip.Prefix) string {
	if v := strings.TrimSpace(r.Header.Get("X-Agent-Id")); v != "" && len(v) <= 256 {
		return "agent:" + v
	}
	if v := strings.TrimSpace(r.Header.Get("X-Caller-Id")); v != "" && len(v) <= 256 {
		return "caller:" + v
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		sum := sha256.Sum256([]byte(v))
		return "key:" + hex.EncodeToString(sum[:])
	}
	if ip, ok := clientIP(r, trusted); ok {
		return "ip:" + ip.String()
	}
	return "anonymous"
}

func clientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) {
		return peer, true
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer, true // a garbled hop: stop believing the header
			}
			a = a.Unmap()
			if !isTrusted(a, trusted) {
				return a, true
			}
		}
	}
	return peer, true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
