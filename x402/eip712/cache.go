package eip712

import (
	"sync"
	"sync/atomic"
)

// DefaultCacheSize is the number of recovered signers a RecoverCache made
// with size zero keeps.
const DefaultCacheSize = 4096

// RecoverCache remembers recovered signers, keyed by the signed digest and
// the signature bytes, so that a payment verified and then settled (or
// verified again on a retry) costs one secp256k1 recovery instead of two.
// A (digest, signature) pair always recovers to the same address, so a hit
// is exactly as trustworthy as a fresh recovery.
//
// It is a two-generation map: entries go into the current generation;
// when that holds half the capacity it becomes the old generation and the
// previous old one is dropped; a hit in the old generation is promoted. So
// it never holds more than its capacity, recently used entries survive,
// and there is no per-entry bookkeeping. Only successful recoveries are
// cached. It is safe for concurrent use; the zero value is not usable
// (call NewRecoverCache).
type RecoverCache struct {
	mu       sync.Mutex
	cur, old map[cacheKey]string
	half     int
	hits     atomic.Uint64
	misses   atomic.Uint64
}

type cacheKey struct {
	digest [32]byte
	sig    [65]byte
}

// NewRecoverCache returns a cache holding at most size signers; size zero
// or less means DefaultCacheSize, and the smallest cache holds two.
func NewRecoverCache(size int) *RecoverCache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	half := max(size/2, 1)
	return &RecoverCache{cur: make(map[cacheKey]string, half), half: half}
}

// Recover is RecoverSigner through the cache. A nil cache recovers without
// caching.
func (c *RecoverCache) Recover(digest [32]byte, signature string) (string, error) {
	if c == nil {
		return RecoverSigner(digest, signature)
	}
	sig, err := HexBytes(signature, 65)
	if err != nil {
		return "", err
	}
	k := cacheKey{digest: digest}
	copy(k.sig[:], sig)
	c.mu.Lock()
	addr, ok := c.cur[k]
	if !ok {
		if addr, ok = c.old[k]; ok {
			c.putLocked(k, addr)
		}
	}
	c.mu.Unlock()
	if ok {
		c.hits.Add(1)
		return addr, nil
	}
	c.misses.Add(1)
	addr, err = recoverBytes(digest, sig)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.putLocked(k, addr)
	c.mu.Unlock()
	return addr, nil
}

func (c *RecoverCache) putLocked(k cacheKey, addr string) {
	if len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[cacheKey]string, c.half)
	}
	c.cur[k] = addr
}

// Len returns the number of cached signers.
func (c *RecoverCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// Stats returns the number of lookups answered from the cache and the
// number that needed a recovery.
func (c *RecoverCache) Stats() (hits, misses uint64) {
	return c.hits.Load(), c.misses.Load()
}
