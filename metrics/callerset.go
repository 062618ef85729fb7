package metrics

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
)

// ExactCallers is how many distinct ids a CallerSet keeps exactly. Past it
// the set becomes a HyperLogLog sketch plus a small heavy-hitter summary, so
// one hour of one API costs at most about 20 KB however many callers (real
// or minted) it sees.
const ExactCallers = 1024

// HLLPrecision is the precision p of the sketch: 2^p one-byte registers
// (16 KB) and a standard error of 1.04/sqrt(2^p), about 0.8%.
const HLLPrecision = 14

// HeavyHitters is how many of the busiest ids a sketched set still counts
// (Space-Saving): any id with more than 1/HeavyHitters of the calls is
// among them, with its calls over-estimated by at most calls/HeavyHitters.
const HeavyHitters = 32

const (
	hllRegisters = 1 << HLLPrecision
	hllMaxRank   = 64 - HLLPrecision + 1
)

// ErrCorruptCallerSet is returned when a stored CallerSet cannot be decoded.
var ErrCorruptCallerSet = errors.New("metrics: corrupt caller set")

// CallerSet counts the calls of distinct ids (callers, sources) with
// bounded memory. Up to ExactCallers ids it is an exact map from id to
// calls. Past that it turns into a HyperLogLog sketch, whose union over
// hours and APIs (Merge) still estimates the distinct ids within about 1%,
// and a Space-Saving summary of the HeavyHitters busiest ids, which keeps
// MaxCalls meaningful. The zero value is an empty set; a CallerSet is not
// safe for concurrent use.
type CallerSet struct {
	exact  map[string]int64 // id -> calls while exact
	sketch *hllRegs
	heavy  []heavyCounter // when sketched: at most HeavyHitters counters
	// dirty says heavy holds unsummed counters from merges (ids may repeat
	// and there may be more than HeavyHitters); settle sums and trims them.
	dirty bool
}

// hllRegs are the registers of a HyperLogLog sketch.
type hllRegs [hllRegisters]uint8

type heavyCounter struct {
	id    string
	calls int64
}

// Add counts calls (> 0) for id.
func (s *CallerSet) Add(id string, calls int64) {
	// Clone new ids so that the set does not pin the buffer they were cut
	// from (an event, a request).
	s.add(id, calls, true)
}

func (s *CallerSet) add(id string, calls int64, clone bool) {
	if calls <= 0 {
		return
	}
	if s.sketch != nil {
		s.sketch.add(hashID(id))
		s.addHeavy(id, calls)
		return
	}
	if n, ok := s.exact[id]; ok {
		s.exact[id] = n + calls
		return
	}
	if s.exact == nil {
		s.exact = map[string]int64{}
	}
	if clone {
		id = strings.Clone(id)
	}
	s.exact[id] = calls
	if len(s.exact) > ExactCallers {
		s.toSketch()
	}
}

// toSketch turns an exact set into a sketch: every id is hashed into the
// registers and the busiest ids, with their exact calls, seed the heavy
// hitters (any id left out has no more calls than the least of them, the
// Space-Saving invariant).
func (s *CallerSet) toSketch() {
	s.sketch = new(hllRegs)
	for id := range s.exact {
		s.sketch.add(hashID(id))
	}
	s.heavy = topCounters(s.exact, HeavyHitters)
	s.exact = nil
	s.trimHeavy()
}

// trimHeavy keeps the HeavyHitters busiest counters (ties by id, so that
// the result does not depend on map order).
func (s *CallerSet) trimHeavy() {
	slices.SortFunc(s.heavy, func(a, b heavyCounter) int {
		if a.calls != b.calls {
			if a.calls > b.calls {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	if len(s.heavy) > HeavyHitters {
		clear(s.heavy[HeavyHitters:])
		s.heavy = s.heavy[:HeavyHitters]
	}
}

// addHeavy is the Space-Saving update: a known id adds its calls; a new one
// takes a free counter, or replaces the smallest and inherits its count.
func (s *CallerSet) addHeavy(id string, calls int64) {
	s.settle()
	least := -1
	for i := range s.heavy {
		if s.heavy[i].id == id {
			s.heavy[i].calls += calls
			return
		}
		if least < 0 || s.heavy[i].calls < s.heavy[least].calls {
			least = i
		}
	}
	if len(s.heavy) < HeavyHitters {
		s.heavy = append(s.heavy, heavyCounter{strings.Clone(id), calls})
		return
	}
	s.heavy[least] = heavyCounter{strings.Clone(id), s.heavy[least].calls + calls}
}

// Merge adds o's ids and calls to s (a union of the distinct ids). o's
// contents are unchanged and it is not retained.
func (s *CallerSet) Merge(o *CallerSet) {
	switch {
	case o.sketch == nil && s.sketch == nil:
		if s.exact == nil {
			s.exact = make(map[string]int64, len(o.exact))
		}
		for id, n := range o.exact {
			if s.sketch != nil { // turned into a sketch midway
				s.add(id, n, false)
				continue
			}
			s.exact[id] += n // a set's ids are its own strings already
			if len(s.exact) > ExactCallers {
				s.toSketch()
			}
		}
		return
	case o.sketch == nil:
		// Into a sketch: hash every id, but offer only o's few busiest
		// ids to the heavy hitters. Streaming every id through Space-Saving would
		// cost a counter replacement per id; an id busy over a window is
		// among the busiest of the hours it is busy in.
		for id := range o.exact {
			s.sketch.add(hashID(id))
		}
		s.mergeHeavy(topCounters(o.exact, offerTop))
		return
	case s.sketch == nil:
		exact := s.exact
		s.exact = nil
		s.sketch = new(hllRegs)
		*s.sketch = *o.sketch
		o.settle()
		s.heavy = append(make([]heavyCounter, 0, 2*HeavyHitters), o.heavy...)
		for id := range exact {
			s.sketch.add(hashID(id))
		}
		s.mergeHeavy(topCounters(exact, offerTop))
		return
	}
	for i, r := range o.sketch {
		s.sketch[i] = max(s.sketch[i], r)
	}
	o.settle()
	s.mergeHeavy(o.heavy)
}

// mergeHeavy adds counters to s's heavy hitters. They are appended and
// summed by id lazily (settle), so that merging many hours costs a few
// appends each rather than a search per counter.
func (s *CallerSet) mergeHeavy(hs []heavyCounter) {
	s.heavy = append(s.heavy, hs...)
	s.dirty = true
	if len(s.heavy) > 8*HeavyHitters {
		s.settle()
	}
}

// settle sums the counters of repeated ids and keeps the busiest.
func (s *CallerSet) settle() {
	if !s.dirty {
		return
	}
	s.dirty = false
	sum := make(map[string]int, len(s.heavy))
	out := s.heavy[:0]
	for _, h := range s.heavy {
		if i, ok := sum[h.id]; ok {
			out[i].calls += h.calls
			continue
		}
		sum[h.id] = len(out)
		out = append(out, h)
	}
	clear(s.heavy[len(out):])
	s.heavy = out
	s.trimHeavy()
}

// offerTop is how many of an exact set's busiest ids a merge into a
// sketch offers to its heavy hitters: an id busy over a window is among
// the very busiest of the hours it is busy in.
const offerTop = 4

// topCounters returns the k busiest ids of an exact set (ties broken by
// id, so the result does not depend on map order).
func topCounters(exact map[string]int64, k int) []heavyCounter {
	top := make([]heavyCounter, 0, k)
	least := 0 // index of the smallest counter once top is full
	less := func(a, b heavyCounter) bool { return a.calls < b.calls || a.calls == b.calls && a.id > b.id }
	for id, n := range exact {
		c := heavyCounter{id, n}
		if len(top) < k {
			top = append(top, c)
			if less(c, top[least]) {
				least = len(top) - 1
			}
			continue
		}
		if !less(top[least], c) {
			continue
		}
		top[least] = c
		for i := range top {
			if less(top[i], top[least]) {
				least = i
			}
		}
	}
	return top
}

// Exact reports whether the set still counts every id exactly.
func (s *CallerSet) Exact() bool { return s.sketch == nil }

// Counts returns a copy of the calls per id and true while the set is
// exact; nil and false once it is a sketch.
func (s *CallerSet) Counts() (map[string]int64, bool) {
	if s.sketch != nil {
		return nil, false
	}
	out := make(map[string]int64, len(s.exact))
	for id, n := range s.exact {
		out[id] = n
	}
	return out, true
}

// Distinct returns the number of distinct ids: exact up to ExactCallers,
// a HyperLogLog estimate beyond.
func (s *CallerSet) Distinct() int {
	if s.sketch == nil {
		return len(s.exact)
	}
	e := s.sketch.estimate()
	if !(e < 1<<53) { // +Inf (every register saturated, only from crafted input) or NaN
		e = 1 << 53
	}
	return max(int(math.Round(e)), ExactCallers+1)
}

// MaxCalls returns the calls of the busiest id: exact while the set is
// exact, afterwards the largest heavy-hitter counter (an upper estimate).
func (s *CallerSet) MaxCalls() int64 {
	s.settle()
	var m int64
	for _, n := range s.exact {
		m = max(m, n)
	}
	for _, h := range s.heavy {
		m = max(m, h.calls)
	}
	return m
}

// Entries returns how many ids the set holds in memory (exact ids or
// heavy-hitter counters), at most ExactCallers.
func (s *CallerSet) Entries() int {
	s.settle()
	return len(s.exact) + len(s.heavy)
}

// Clone returns a deep copy.
func (s *CallerSet) Clone() CallerSet {
	s.settle()
	var c CallerSet
	if s.exact != nil {
		c.exact = make(map[string]int64, len(s.exact))
		for id, n := range s.exact {
			c.exact[id] = n
		}
	}
	if s.sketch != nil {
		c.sketch = new(hllRegs)
		*c.sketch = *s.sketch
		c.heavy = slices.Clone(s.heavy)
	}
	return c
}

// Reset empties the set, keeping its exact map's memory.
func (s *CallerSet) Reset() {
	clear(s.exact)
	s.sketch, s.heavy, s.dirty = nil, nil, false
}

// Equal reports whether two sets hold the same state.
func (s *CallerSet) Equal(o *CallerSet) bool {
	s.settle()
	o.settle()
	if (s.sketch == nil) != (o.sketch == nil) {
		return false
	}
	if s.sketch == nil {
		if len(s.exact) != len(o.exact) {
			return false
		}
		for id, n := range s.exact {
			if m, ok := o.exact[id]; !ok || m != n {
				return false
			}
		}
		return true
	}
	if *s.sketch != *o.sketch || len(s.heavy) != len(o.heavy) {
		return false
	}
	a, b := slices.Clone(s.heavy), slices.Clone(o.heavy)
	cmpHeavy := func(x, y heavyCounter) int { return strings.Compare(x.id, y.id) }
	slices.SortFunc(a, cmpHeavy)
	slices.SortFunc(b, cmpHeavy)
	return slices.Equal(a, b)
}

// hashID is a stable 64-bit hash of an id (FNV-1a, then the MurmurHash3
// finalizer to spread FNV's weak high bits), the same in every process, so
// that sketches stored by several replicas merge.
func hashID(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// add records one hash: the top HLLPrecision bits pick the register, the
// rank is the position of the first 1 in the remaining bits.
func (r *hllRegs) add(h uint64) {
	idx := h >> (64 - HLLPrecision)
	rest := h << HLLPrecision
	rank := uint8(hllMaxRank)
	if rest != 0 {
		rank = uint8(bits.LeadingZeros64(rest) + 1)
	}
	if rank > r[idx] {
		r[idx] = rank
	}
}

// estimate is Ertl's improved raw estimator ("New cardinality estimation
// algorithms for HyperLogLog sketches", 2017): unbiased over the whole
// range, small cardinalities included, without empirical bias tables.
func (r *hllRegs) estimate() float64 {
	var hist [hllMaxRank + 1]float64
	for _, v := range r {
		hist[v]++
	}
	const m = float64(hllRegisters)
	z := m * hllTau(1-hist[hllMaxRank]/m)
	for k := hllMaxRank - 1; k >= 1; k-- {
		z = 0.5 * (z + hist[k])
	}
	z += m * hllSigma(hist[0]/m)
	return m * m / (2 * math.Ln2 * z)
}

func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// Binary form (what SQL adapters store): an empty slice is an empty set;
// otherwise a format byte, then
//
//	1 (exact):  uvarint n, then n times (id, uvarint calls)
//	2 (sketch, dense):  2^HLLPrecision register bytes, heavy hitters
//	3 (sketch, sparse): uvarint k, k times (uvarint index delta, register
//	                    byte), heavy hitters
//
// with heavy hitters as uvarint n then n times (id, uvarint calls). An id
// of the form "x_" + 32 lowercase hex digits (HashCaller, HashClientNet,
// HashPayer) is stored as 1, the letter and 16 bytes; any other as 0, its
// uvarint length and its bytes.
const (
	formatExact  = 1
	formatDense  = 2
	formatSparse = 3
	idRaw        = 0
	idHashed     = 1
	maxStoredID  = 1 << 16
)

// AppendBinary appends the set's binary form to b.
func (s *CallerSet) AppendBinary(b []byte) []byte {
	s.settle()
	if s.sketch == nil {
		if len(s.exact) == 0 {
			return b
		}
		ids := make([]string, 0, len(s.exact))
		for id := range s.exact {
			ids = append(ids, id)
		}
		slices.Sort(ids) // a canonical form
		b = append(b, formatExact)
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = appendID(b, id)
			b = binary.AppendUvarint(b, uint64(s.exact[id]))
		}
		return b
	}
	nonzero := 0
	for _, v := range s.sketch {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero*3 < hllRegisters {
		b = append(b, formatSparse)
		b = binary.AppendUvarint(b, uint64(nonzero))
		last := -1
		for i, v := range s.sketch {
			if v != 0 {
				b = binary.AppendUvarint(b, uint64(i-last))
				b = append(b, v)
				last = i
			}
		}
	} else {
		b = append(b, formatDense)
		b = append(b, s.sketch[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(s.heavy)))
	for _, h := range s.heavy {
		b = appendID(b, h.id)
		b = binary.AppendUvarint(b, uint64(h.calls))
	}
	return b
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (s *CallerSet) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil), nil }

// UnmarshalBinary implements encoding.BinaryUnmarshaler; it replaces the
// set's contents. A malformed input is an error wrapping
// ErrCorruptCallerSet and leaves the set empty.
func (s *CallerSet) UnmarshalBinary(b []byte) error { return s.DecodeInterned(b, nil) }

// DecodeInterned is UnmarshalBinary for scans over many stored sets: ids
// are looked up in (and added to) names, keyed by their encoded form, so
// that each distinct id is one string for the whole scan and decoding a
// known id allocates nothing. names may be nil; it must be used only with
// DecodeInterned. The set's exact map is reused.
func (s *CallerSet) DecodeInterned(b []byte, names map[string]string) error {
	s.Reset()
	if err := s.decode(b, names); err != nil {
		s.Reset()
		return fmt.Errorf("%w: %v", ErrCorruptCallerSet, err)
	}
	return nil
}

// MarshalText encodes the binary form in standard base64, so that a
// CallerSet is a JSON string.
func (s CallerSet) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(s.AppendBinary(nil))), nil
}

// UnmarshalText decodes MarshalText's form.
func (s *CallerSet) UnmarshalText(t []byte) error {
	b, err := base64.StdEncoding.DecodeString(string(t))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptCallerSet, err)
	}
	return s.UnmarshalBinary(b)
}

func (s *CallerSet) decode(b []byte, names map[string]string) error {
	if len(b) == 0 {
		return nil
	}
	format := b[0]
	b = b[1:]
	switch format {
	case formatExact:
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > ExactCallers {
			return errors.New("bad exact count")
		}
		b = b[k:]
		if s.exact == nil {
			s.exact = make(map[string]int64, n)
		}
		for range n {
			id, calls, rest, err := readEntry(b, names)
			if err != nil {
				return err
			}
			if _, dup := s.exact[id]; dup {
				return errors.New("duplicate id")
			}
			s.exact[id], b = calls, rest
		}
		return trailing(b)
	case formatDense:
		if len(b) < hllRegisters {
			return errors.New("short registers")
		}
		s.sketch = new(hllRegs)
		copy(s.sketch[:], b)
		b = b[hllRegisters:]
	case formatSparse:
		n, k := binary.Uvarint(b)
		if k <= 0 || n > hllRegisters {
			return errors.New("bad register count")
		}
		b = b[k:]
		s.sketch = new(hllRegs)
		idx := -1
		for range n {
			d, k := binary.Uvarint(b)
			if k <= 0 || d == 0 || d > hllRegisters || len(b) <= k {
				return errors.New("bad register index")
			}
			idx += int(d)
			if idx >= hllRegisters {
				return errors.New("register index out of range")
			}
			s.sketch[idx] = b[k]
			b = b[k+1:]
		}
	default:
		return fmt.Errorf("unknown format %d", format)
	}
	for _, v := range s.sketch {
		if v > hllMaxRank {
			return errors.New("register out of range")
		}
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > HeavyHitters {
		return errors.New("bad heavy-hitter count")
	}
	b = b[k:]
	s.heavy = make([]heavyCounter, 0, n)
	for range n {
		id, calls, rest, err := readEntry(b, names)
		if err != nil {
			return err
		}
		s.heavy, b = append(s.heavy, heavyCounter{id, calls}), rest
	}
	return trailing(b)
}

func trailing(b []byte) error {
	if len(b) != 0 {
		return errors.New("trailing bytes")
	}
	return nil
}

func readEntry(b []byte, names map[string]string) (id string, calls int64, rest []byte, err error) {
	id, b, err = readID(b, names)
	if err != nil {
		return "", 0, nil, err
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > math.MaxInt64/2 {
		return "", 0, nil, errors.New("bad calls")
	}
	return id, int64(n), b[k:], nil
}

const hexDigits = "0123456789abcdef"

// hashedID reports whether id is "x_" followed by 32 lowercase hex digits.
// hexValue[c] is the value of the lower-case hex digit c, or -1: sets are
// encoded on every usage-event batch, so an id's 32 digits are looked up
// in a table rather than searched for.
var hexValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(hexDigits) {
		t[hexDigits[i]] = int8(i)
	}
	return t
}()

func hashedID(id string) bool {
	if len(id) != 34 || id[0] < 'a' || id[0] > 'z' || id[1] != '_' {
		return false
	}
	for i := 2; i < len(id); i++ {
		if hexValue[id[i]] < 0 {
			return false
		}
	}
	return true
}

func appendID(b []byte, id string) []byte {
	if hashedID(id) {
		b = append(b, idHashed, id[0])
		for i := 2; i < len(id); i += 2 {
			b = append(b, byte(hexValue[id[i]])<<4|byte(hexValue[id[i+1]]))
		}
		return b
	}
	b = append(b, idRaw)
	b = binary.AppendUvarint(b, uint64(len(id)))
	return append(b, id...)
}

// readID decodes one id. With names, ids are interned by their encoded
// form, so a known id costs one map lookup and no allocation.
func readID(b []byte, names map[string]string) (string, []byte, error) {
	if len(b) > 0 && b[0] == idHashed {
		if len(b) < 18 || b[1] < 'a' || b[1] > 'z' {
			return "", nil, errors.New("bad hashed id")
		}
		enc := b[:18]
		if v, ok := names[string(enc)]; ok {
			return v, b[18:], nil
		}
		var out [34]byte
		out[0], out[1] = b[1], '_'
		for i, c := range b[2:18] {
			out[2+2*i], out[3+2*i] = hexDigits[c>>4], hexDigits[c&15]
		}
		id := string(out[:])
		if names != nil {
			names[string(enc)] = id
		}
		return id, b[18:], nil
	}
	if len(b) == 0 || b[0] != idRaw {
		return "", nil, errors.New("bad id tag")
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n >= maxStoredID || uint64(len(b)-1-k) < n {
		return "", nil, errors.New("bad id")
	}
	end := 1 + k + int(n)
	enc := b[:end]
	if v, ok := names[string(enc)]; ok {
		return v, b[end:], nil
	}
	id := string(b[1+k : end])
	if names != nil {
		names[string(enc)] = id
	}
	return id, b[end:], nil
}
