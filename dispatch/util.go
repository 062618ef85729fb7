package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

func unescapePath(p string) (string, error) { return url.PathUnescape(p) }

// HashCaller returns the stored form of a caller identity: "c_" followed by
// the first 32 hex digits (128 bits) of its SHA-256, the same function as
// metrics.HashCaller. Raw identities (agent ids, API keys, IPs) are never
// stored.
func HashCaller(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return "c_" + hex.EncodeToString(sum[:16])
}

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
	if ip, ok := ClientAddr(r, trusted); ok {
		return "ip:" + ip.String()
	}
	return "anonymous"
}

// ClientAddr returns the client's address: the connection's peer, or, when
// that peer is one of the trusted proxies, the first untrusted address of
// X-Forwarded-For read from the right. It reports false when RemoteAddr is
// not an address.
func ClientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
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
