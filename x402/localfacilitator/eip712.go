package localfacilitator

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/402claw/dispatcher/x402"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// Domain is the EIP-712 domain of a token contract, as USDC defines it:
// EIP712Domain(string name,string version,uint256 chainId,address verifyingContract).
type Domain struct {
	// Name is the token's EIP-712 name ("USDC" on Base Sepolia, "USD Coin"
	// on Base).
	Name string
	// Version is the token's EIP-712 version ("2").
	Version string
	// ChainID is the EVM chain id.
	ChainID int64
	// VerifyingContract is the token contract address.
	VerifyingContract string
}

// DomainFor derives the EIP-712 domain a requirement's payments are signed
// in: name and version from its extra field (falling back to the network
// table when the asset is the network's USDC and extra is silent), chain id
// from its network, verifying contract its asset.
func DomainFor(req x402.Requirement) (Domain, error) {
	chainID, ok := x402.EVMChainID(req.Network)
	if !ok {
		return Domain{}, fmt.Errorf("localfacilitator: network %q is not an EVM network", req.Network)
	}
	d := Domain{
		Name:              req.ExtraString("name"),
		Version:           req.ExtraString("version"),
		ChainID:           chainID,
		VerifyingContract: req.Asset,
	}
	if d.Name == "" || d.Version == "" {
		nw, err := x402.LookupNetwork(req.Network)
		if err != nil || !strings.EqualFold(nw.USDC.Address, req.Asset) {
			return Domain{}, errors.New("localfacilitator: requirement extra lacks the token's EIP-712 name and version")
		}
		if d.Name == "" {
			d.Name = nw.USDC.Name
		}
		if d.Version == "" {
			d.Version = nw.USDC.Version
		}
	}
	return d, nil
}

var (
	domainTypeHash   = keccak([]byte("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	transferTypeHash = keccak([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	maxUint256       = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
)

// Separator returns the EIP-712 domain separator hash.
func (d Domain) Separator() ([32]byte, error) {
	contract, err := addressWord(d.VerifyingContract)
	if err != nil {
		return [32]byte{}, fmt.Errorf("verifyingContract: %w", err)
	}
	if d.ChainID <= 0 {
		return [32]byte{}, fmt.Errorf("localfacilitator: chain id %d is not positive", d.ChainID)
	}
	var chain [32]byte
	big.NewInt(d.ChainID).FillBytes(chain[:])
	name := keccak([]byte(d.Name))
	version := keccak([]byte(d.Version))
	return keccak(domainTypeHash[:], name[:], version[:], chain[:], contract[:]), nil
}

// Digest returns the EIP-712 digest of an EIP-3009
// TransferWithAuthorization message in domain d: the hash the payer signs.
func Digest(d Domain, a x402.Authorization) ([32]byte, error) {
	sep, err := d.Separator()
	if err != nil {
		return [32]byte{}, err
	}
	from, err := addressWord(a.From)
	if err != nil {
		return [32]byte{}, fmt.Errorf("from: %w", err)
	}
	to, err := addressWord(a.To)
	if err != nil {
		return [32]byte{}, fmt.Errorf("to: %w", err)
	}
	value, err := uintWord(a.Value)
	if err != nil {
		return [32]byte{}, fmt.Errorf("value: %w", err)
	}
	after, err := uintWord(a.ValidAfter)
	if err != nil {
		return [32]byte{}, fmt.Errorf("validAfter: %w", err)
	}
	before, err := uintWord(a.ValidBefore)
	if err != nil {
		return [32]byte{}, fmt.Errorf("validBefore: %w", err)
	}
	nonce, err := hexBytes(a.Nonce, 32)
	if err != nil {
		return [32]byte{}, fmt.Errorf("nonce: %w", err)
	}
	structHash := keccak(transferTypeHash[:], from[:], to[:], value[:], after[:], before[:], nonce)
	return keccak([]byte{0x19, 0x01}, sep[:], structHash[:]), nil
}

// RecoverSigner returns the EIP-55 address that produced a 65-byte
// Ethereum signature (r || s || v, v in {27, 28} or {0, 1}) over digest.
// Signatures with a high s value are refused, as the USDC contract refuses
// them.
func RecoverSigner(digest [32]byte, signature string) (string, error) {
	sig, err := hexBytes(signature, 65)
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	v := sig[64]
	if v < 27 {
		v += 27
	}
	if v != 27 && v != 28 {
		return "", fmt.Errorf("signature: v = %d is not 27 or 28", sig[64])
	}
	var s secp256k1.ModNScalar
	if overflow := s.SetByteSlice(sig[32:64]); overflow || s.IsOverHalfOrder() {
		return "", errors.New("signature: s is not in the lower half of the curve order")
	}
	compact := make([]byte, 65)
	compact[0] = v // 27 + recovery id: an uncompressed key, as Ethereum uses
	copy(compact[1:], sig[:64])
	pub, _, err := ecdsa.RecoverCompact(compact, digest[:])
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	return pubKeyAddress(pub), nil
}

// ChecksumAddress returns the EIP-55 mixed-case form of a 0x-prefixed
// 20-byte hex address.
func ChecksumAddress(addr string) (string, error) {
	b, err := hexBytes(addr, 20)
	if err != nil {
		return "", err
	}
	return checksum(b), nil
}

func pubKeyAddress(pub *secp256k1.PublicKey) string {
	h := keccak(pub.SerializeUncompressed()[1:])
	return checksum(h[12:])
}

func checksum(addr []byte) string {
	lower := hex.EncodeToString(addr)
	h := keccak([]byte(lower))
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

func keccak(parts ...[]byte) [32]byte {
	h := sha3.NewLegacyKeccak256()
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// hexBytes decodes 0x-prefixed hex of exactly n bytes.
func hexBytes(s string, n int) ([]byte, error) {
	if len(s) != 2+2*n || (s[:2] != "0x" && s[:2] != "0X") {
		return nil, fmt.Errorf("%q is not %d bytes of 0x-prefixed hex", clip(s), n)
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil {
		return nil, fmt.Errorf("%q is not hex", clip(s))
	}
	return b, nil
}

func addressWord(s string) ([32]byte, error) {
	var w [32]byte
	b, err := hexBytes(s, 20)
	if err != nil {
		return w, err
	}
	copy(w[12:], b)
	return w, nil
}

func uintWord(s string) ([32]byte, error) {
	var w [32]byte
	if s == "" || len(s) > 78 || strings.TrimLeft(s, "0123456789") != "" {
		return w, fmt.Errorf("%q is not an unsigned integer", clip(s))
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(maxUint256) > 0 {
		return w, fmt.Errorf("%q is not an unsigned 256-bit integer", clip(s))
	}
	n.FillBytes(w[:])
	return w, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
