package localfacilitator

import (
	"errors"
	"fmt"
	"strings"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Domain is the EIP-712 domain of a token contract, as USDC defines it:
// EIP712Domain(string name,string version,uint256 chainId,address verifyingContract).
// It is eip712.Domain; the alias keeps this package's API.
type Domain = eip712.Domain

// DomainFor derives the EIP-712 domain a requirement's EIP-3009 payments
// are signed in: name and version from its extra field (falling back to the
// network table when the asset is the network's USDC and extra is silent),
// chain id from its network, verifying contract its asset.
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

var transferTypeHash = eip712.Keccak256([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))

// Digest returns the EIP-712 digest of an EIP-3009
// TransferWithAuthorization message in domain d: the hash the payer signs.
func Digest(d Domain, a x402.Authorization) ([32]byte, error) {
	from, err := eip712.Address(a.From)
	if err != nil {
		return [32]byte{}, fmt.Errorf("from: %w", err)
	}
	to, err := eip712.Address(a.To)
	if err != nil {
		return [32]byte{}, fmt.Errorf("to: %w", err)
	}
	value, err := eip712.Uint256(a.Value)
	if err != nil {
		return [32]byte{}, fmt.Errorf("value: %w", err)
	}
	after, err := eip712.Uint256(a.ValidAfter)
	if err != nil {
		return [32]byte{}, fmt.Errorf("validAfter: %w", err)
	}
	before, err := eip712.Uint256(a.ValidBefore)
	if err != nil {
		return [32]byte{}, fmt.Errorf("validBefore: %w", err)
	}
	nonce, err := eip712.Bytes32(a.Nonce)
	if err != nil {
		return [32]byte{}, fmt.Errorf("nonce: %w", err)
	}
	structHash := eip712.Keccak256(transferTypeHash[:], from[:], to[:], value[:], after[:], before[:], nonce[:])
	return eip712.Digest(d, structHash)
}

// RecoverSigner returns the EIP-55 address that produced a 65-byte
// Ethereum signature over digest; see eip712.RecoverSigner.
func RecoverSigner(digest [32]byte, signature string) (string, error) {
	return eip712.RecoverSigner(digest, signature)
}

// ChecksumAddress returns the EIP-55 mixed-case form of a 0x-prefixed
// 20-byte hex address; see eip712.ChecksumAddress.
func ChecksumAddress(addr string) (string, error) {
	return eip712.ChecksumAddress(addr)
}
