package eip712

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// ErrMalformed is wrapped by every error about a malformed input (an
// address, integer, hex string or signature that cannot be encoded).
var ErrMalformed = errors.New("eip712: malformed input")

// Domain is an EIP-712 domain with the fields token and Permit2 contracts
// use: name, an optional version, chain id and verifying contract.
type Domain struct {
	// Name is the domain name ("USDC", "USD Coin", "Permit2").
	Name string
	// Version is the domain version ("2"); empty means the domain has no
	// version field, as Permit2's does not.
	Version string
	// ChainID is the EVM chain id.
	ChainID int64
	// VerifyingContract is the contract address.
	VerifyingContract string
}

var (
	domainTypeHash          = Keccak256([]byte("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	domainNoVersionTypeHash = Keccak256([]byte("EIP712Domain(string name,uint256 chainId,address verifyingContract)"))
	maxUint256              = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
)

// separators remembers the separators of the first maxSeparators domains
// (a server signs in a handful: its tokens' and the schemes' contracts).
var separators struct {
	sync.Map // Domain -> [32]byte
	n        atomic.Int64
}

const maxSeparators = 1024

// Separator returns the EIP-712 domain separator: the hash of the domain
// struct, whose type lists version only when Version is set.
func (d Domain) Separator() ([32]byte, error) {
	if v, ok := separators.Load(d); ok {
		return v.([32]byte), nil
	}
	sep, err := d.separator()
	if err == nil && separators.n.Load() < maxSeparators {
		if _, loaded := separators.LoadOrStore(d, sep); !loaded {
			separators.n.Add(1)
		}
	}
	return sep, err
}

func (d Domain) separator() ([32]byte, error) {
	contract, err := Address(d.VerifyingContract)
	if err != nil {
		return [32]byte{}, fmt.Errorf("verifyingContract: %w", err)
	}
	if d.ChainID <= 0 {
		return [32]byte{}, fmt.Errorf("%w: chain id %d is not positive", ErrMalformed, d.ChainID)
	}
	var chain [32]byte
	big.NewInt(d.ChainID).FillBytes(chain[:])
	name := Keccak256([]byte(d.Name))
	if d.Version == "" {
		return Keccak256(domainNoVersionTypeHash[:], name[:], chain[:], contract[:]), nil
	}
	version := Keccak256([]byte(d.Version))
	return Keccak256(domainTypeHash[:], name[:], version[:], chain[:], contract[:]), nil
}

// Digest returns the EIP-712 digest of a struct hash in domain d:
// keccak256(0x19 0x01 || separator || structHash), the hash that is signed.
func Digest(d Domain, structHash [32]byte) ([32]byte, error) {
	sep, err := d.Separator()
	if err != nil {
		return [32]byte{}, err
	}
	return Keccak256([]byte{0x19, 0x01}, sep[:], structHash[:]), nil
}

// Keccak256 returns the Keccak-256 hash (Ethereum's, not SHA3-256) of the
// concatenated parts.
func Keccak256(parts ...[]byte) [32]byte {
	h := sha3.NewLegacyKeccak256()
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// HexBytes decodes 0x-prefixed hex of exactly n bytes.
func HexBytes(s string, n int) ([]byte, error) {
	if len(s) != 2+2*n || (s[:2] != "0x" && s[:2] != "0X") {
		return nil, fmt.Errorf("%w: %q is not %d bytes of 0x-prefixed hex", ErrMalformed, clip(s), n)
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not hex", ErrMalformed, clip(s))
	}
	return b, nil
}

// Address encodes a 0x-prefixed 20-byte address as a 32-byte word.
func Address(s string) ([32]byte, error) {
	var w [32]byte
	b, err := HexBytes(s, 20)
	if err != nil {
		return w, err
	}
	copy(w[12:], b)
	return w, nil
}

// Uint256 encodes an unsigned decimal integer below 2^256 as a 32-byte
// word. Only ASCII digits are accepted (no sign, no 0x, at most 78
// digits).
func Uint256(s string) ([32]byte, error) {
	var w [32]byte
	n, err := ParseUint256(s)
	if err != nil {
		return w, err
	}
	n.FillBytes(w[:])
	return w, nil
}

// ParseUint256 parses an unsigned decimal integer below 2^256 (only ASCII
// digits, at most 78 of them).
func ParseUint256(s string) (*big.Int, error) {
	if s == "" || len(s) > 78 || strings.TrimLeft(s, "0123456789") != "" {
		return nil, fmt.Errorf("%w: %q is not an unsigned integer", ErrMalformed, clip(s))
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(maxUint256) > 0 {
		return nil, fmt.Errorf("%w: %q is not an unsigned 256-bit integer", ErrMalformed, clip(s))
	}
	return n, nil
}

// Bytes32 decodes 0x-prefixed hex of exactly 32 bytes as a word.
func Bytes32(s string) ([32]byte, error) {
	var w [32]byte
	b, err := HexBytes(s, 32)
	if err != nil {
		return w, err
	}
	copy(w[:], b)
	return w, nil
}

// RecoverSigner returns the EIP-55 address that produced a 65-byte
// Ethereum signature (r || s || v, v in {27, 28} or {0, 1}) over digest.
// Signatures with a high s value are refused, as USDC and Permit2 refuse
// them.
func RecoverSigner(digest [32]byte, signature string) (string, error) {
	sig, err := HexBytes(signature, 65)
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	return recoverBytes(digest, sig)
}

func recoverBytes(digest [32]byte, sig []byte) (string, error) {
	pub, err := recoverKey(digest, sig)
	if err != nil {
		return "", err
	}
	return PublicKeyAddress(pub), nil
}

func recoverKey(digest [32]byte, sig []byte) (*secp256k1.PublicKey, error) {
	v := sig[64]
	if v < 27 {
		v += 27
	}
	if v != 27 && v != 28 {
		return nil, fmt.Errorf("%w: signature v = %d is not 27 or 28", ErrMalformed, sig[64])
	}
	var s secp256k1.ModNScalar
	if overflow := s.SetByteSlice(sig[32:64]); overflow || s.IsOverHalfOrder() {
		return nil, fmt.Errorf("%w: signature s is not in the lower half of the curve order", ErrMalformed)
	}
	var compact [65]byte
	compact[0] = v // 27 + recovery id: an uncompressed key, as Ethereum uses
	copy(compact[1:], sig[:64])
	pub, _, err := ecdsa.RecoverCompact(compact[:], digest[:])
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	return pub, nil
}

// Sign signs digest with key and returns the 65-byte Ethereum signature
// (r || s || v, v 27 or 28) as 0x-prefixed hex. It is for test keys.
func Sign(key *secp256k1.PrivateKey, digest [32]byte) (string, error) {
	compact := ecdsa.SignCompact(key, digest[:], false)
	// compact is <27 + recovery code><r><s>. Ethereum's v carries only the
	// parity bit; the overflow bit (probability about 2^-127) cannot be
	// expressed, so such a signature is refused rather than sent broken.
	code := compact[0] - 27
	if code > 1 {
		return "", errors.New("eip712: signature needs an unrepresentable recovery id")
	}
	sig := make([]byte, 65)
	copy(sig, compact[1:])
	sig[64] = 27 + code
	return "0x" + hex.EncodeToString(sig), nil
}

// ChecksumAddress returns the EIP-55 mixed-case form of a 0x-prefixed
// 20-byte hex address.
func ChecksumAddress(addr string) (string, error) {
	b, err := HexBytes(addr, 20)
	if err != nil {
		return "", err
	}
	return checksum(b), nil
}

// PublicKeyAddress returns the EIP-55 address of a secp256k1 public key.
func PublicKeyAddress(pub *secp256k1.PublicKey) string {
	h := Keccak256(pub.SerializeUncompressed()[1:])
	return checksum(h[12:])
}

func checksum(addr []byte) string {
	lower := hex.EncodeToString(addr)
	h := Keccak256([]byte(lower))
	out := []byte("0x" + lower)
	for i := 0; i < len(lower); i++ {
		c := lower[i]
		if c < 'a' {
			continue
		}
		nibble := h[i/2]
		if i%2 == 0 {
			nibble >>= 4
		}
		if nibble&0x0f >= 8 {
			out[i+2] = c - 'a' + 'A'
		}
	}
	return string(out)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
