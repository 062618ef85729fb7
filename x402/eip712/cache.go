package eip712

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
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
//
// With key tables (CacheConfig.KeyTables), IsSigner also checks with a
// KeyTable the signatures of the keys the caller vouched for most often
// (Vouch), which costs about a third of a recovery.
type RecoverCache struct {
	mu       sync.Mutex
	cur, old map[cacheKey]string
	half     int
	hits     atomic.Uint64
	misses   atomic.Uint64

	// Key tables, by lower-case address; seen holds the keys recovered
	// lately (without a table) and how often the caller vouched for
	// them; building is set while a table is being built.
	maxTables int
	after     int
	tables    map[string]*tableEntry
	seen      map[string]*seenKey
	building  bool
	tick      uint64
	fast      atomic.Uint64
}

type seenKey struct {
	pub    *secp256k1.PublicKey
	vouchs int
}

type tableEntry struct {
	t    *KeyTable
	used uint64 // the cache's tick when last used
}

// CacheConfig configures NewCache.
type CacheConfig struct {
	// Size is the number of recovered signers kept; zero or less means
	// DefaultCacheSize.
	Size int
	// KeyTables is the number of signing keys given a KeyTable (about
	// KeyTableBytes of memory each, the least recently used dropped
	// first); zero means none.
	KeyTables int
	// KeyTableAfter is how many times the caller must vouch for a key
	// (Vouch) that IsSigner recovered before it gets a table, built in the
	// background; zero means DefaultKeyTableAfter. Vouching only for
	// signatures that served a purpose (a charged voucher on a funded
	// channel) keeps anyone who can merely sign from making the cache
	// build tables.
	KeyTableAfter int
}

// DefaultKeyTableAfter is CacheConfig.KeyTableAfter's default: a table
// costs about as much to build as a hundred recoveries.
const DefaultKeyTableAfter = 32

type cacheKey struct {
	digest [32]byte
	sig    [65]byte
}

// NewRecoverCache returns a cache holding at most size signers; size zero
// or less means DefaultCacheSize, and the smallest cache holds two.
func NewRecoverCache(size int) *RecoverCache {
	return NewCache(CacheConfig{Size: size})
}

// NewCache returns a cache configured by cfg.
func NewCache(cfg CacheConfig) *RecoverCache {
	size := cfg.Size
	if size <= 0 {
		size = DefaultCacheSize
	}
	half := max(size/2, 1)
	c := &RecoverCache{cur: make(map[cacheKey]string, half), half: half, maxTables: max(cfg.KeyTables, 0), after: cfg.KeyTableAfter}
	if c.after <= 0 {
		c.after = DefaultKeyTableAfter
	}
	if c.maxTables > 0 {
		c.tables, c.seen = map[string]*tableEntry{}, map[string]*seenKey{}
	}
	return c
}

// IsSigner reports whether signature over digest was made by address
// (compared case-insensitively): RecoverSigner(digest, signature) ==
// address, answered from the cache, from address's KeyTable when it has
// one, or by a recovery. A malformed signature is an error, as for
// RecoverSigner, unless a KeyTable answered (then it is only refused).
func (c *RecoverCache) IsSigner(digest [32]byte, signature, address string) (bool, error) {
	if c == nil {
		got, err := RecoverSigner(digest, signature)
		return err == nil && strings.EqualFold(got, address), err
	}
	sig, err := HexBytes(signature, 65)
	if err != nil {
		return false, err
	}
	k := cacheKey{digest: digest}
	copy(k.sig[:], sig)
	lower := ""
	var tab *KeyTable
	c.mu.Lock()
	addr, ok := c.cur[k]
	if !ok {
		if addr, ok = c.old[k]; ok {
			c.putLocked(k, addr)
		}
	}
	if !ok && c.tables != nil {
		lower = strings.ToLower(address)
		if e := c.tables[lower]; e != nil {
			c.tick++
			e.used, tab = c.tick, e.t
		}
	}
	c.mu.Unlock()
	if ok {
		c.hits.Add(1)
		return strings.EqualFold(addr, address), nil
	}
	if tab != nil {
		c.fast.Add(1)
		if !tab.Verify(digest, sig) {
			return false, nil
		}
		c.mu.Lock()
		c.putLocked(k, tab.Address())
		c.mu.Unlock()
		return true, nil
	}
	c.misses.Add(1)
	pub, err := recoverKey(digest, sig)
	if err != nil {
		return false, err
	}
	addr = PublicKeyAddress(pub)
	match := strings.EqualFold(addr, address)
	c.mu.Lock()
	c.putLocked(k, addr)
	if match && c.tables != nil && c.seen[lower] == nil {
		if len(c.seen) >= 4*c.half {
			clear(c.seen) // forget rare keys now and then
		}
		c.seen[lower] = &seenKey{pub: pub}
	}
	c.mu.Unlock()
	return match, nil
}

// Vouch tells the cache that a signature IsSigner accepted for address
// was put to use. Once a key recovered lately has been vouched for
// KeyTableAfter times, its KeyTable is built in the background (one build
// at a time). Without key tables it does nothing.
func (c *RecoverCache) Vouch(address string) {
	if c == nil || c.tables == nil {
		return
	}
	lower := strings.ToLower(address)
	c.mu.Lock()
	sk := c.seen[lower]
	if sk == nil || c.tables[lower] != nil {
		c.mu.Unlock()
		return
	}
	sk.vouchs++
	due := sk.vouchs >= c.after && !c.building
	if due {
		c.building = true
	}
	c.mu.Unlock()
	if due {
		go c.build(lower, sk.pub)
	}
}

// build makes the table of pub and keeps it under address, dropping the
// least recently used table when full.
func (c *RecoverCache) build(address string, pub *secp256k1.PublicKey) {
	t := NewKeyTable(pub)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.building = false
	delete(c.seen, address)
	if len(c.tables) >= c.maxTables {
		var lru string
		var oldest uint64
		for a, e := range c.tables {
			if lru == "" || e.used < oldest {
				lru, oldest = a, e.used
			}
		}
		delete(c.tables, lru)
	}
	c.tick++
	c.tables[address] = &tableEntry{t: t, used: c.tick}
}

// KeyTables returns the addresses (lower case) that have a KeyTable.
func (c *RecoverCache) KeyTables() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.tables))
	for a := range c.tables {
		out = append(out, a)
	}
	return out
}

// Verified returns how many IsSigner calls a KeyTable answered.
func (c *RecoverCache) Verified() uint64 { return c.fast.Load() }

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
