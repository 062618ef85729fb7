package x402

import (
	"fmt"
	"strconv"
	"strings"
)

// Network identifiers, in both generations' spellings.
const (
	// NetworkBaseSepolia is Base Sepolia (testnet) in CAIP-2 form, the
	// default network.
	NetworkBaseSepolia = "eip155:84532"
	// NetworkBase is Base mainnet in CAIP-2 form.
	NetworkBase = "eip155:8453"
	// NetworkBaseSepoliaV1 is Base Sepolia as version 1 names it.
	NetworkBaseSepoliaV1 = "base-sepolia"
	// NetworkBaseV1 is Base mainnet as version 1 names it.
	NetworkBaseV1 = "base"
	// DefaultNetwork is the network of a requirement whose params leave the
	// network empty.
	DefaultNetwork = NetworkBaseSepolia
)

// Asset describes the token a network's payments are made in. Name and
// Version are the token's EIP-712 domain, which clients read from a
// requirement's extra field.
type Asset struct {
	// Address is the token contract, EIP-55 checksummed.
	Address string
	// Decimals is the number of decimal places of one token unit.
	Decimals int32
	// Name is the EIP-712 domain name of the token contract.
	Name string
	// Version is the EIP-712 domain version of the token contract.
	Version string
}

// Extra returns the requirement extra field clients need to sign for this
// asset: {"name": ..., "version": ...}.
func (a Asset) Extra() map[string]any {
	return map[string]any{"name": a.Name, "version": a.Version}
}

// Network is one entry of the package's network table.
type Network struct {
	// ID is the CAIP-2 identifier, used by version 2.
	ID string
	// V1Name is the name version 1 uses.
	V1Name string
	// ChainID is the EVM chain id (the CAIP-2 reference).
	ChainID int64
	// USDC is the network's USDC contract, the asset payments use.
	USDC Asset
}

var networks = [...]Network{
	{
		ID:      NetworkBaseSepolia,
		V1Name:  NetworkBaseSepoliaV1,
		ChainID: 84532,
		USDC: Asset{
			Address:  "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
			Decimals: 6,
			Name:     "USDC",
			Version:  "2",
		},
	},
	{
		ID:      NetworkBase,
		V1Name:  NetworkBaseV1,
		ChainID: 8453,
		USDC: Asset{
			Address:  "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
			Decimals: 6,
			Name:     "USD Coin",
			Version:  "2",
		},
	},
}

// Networks returns the known networks, Base Sepolia first. The slice is a
// copy that the caller may modify.
func Networks() []Network {
	out := make([]Network, len(networks))
	copy(out, networks[:])
	return out
}

// LookupNetwork finds a known network by its CAIP-2 identifier or its
// version 1 name (case-insensitive). Unknown names yield ErrUnknownNetwork.
func LookupNetwork(name string) (Network, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, nw := range networks {
		if n == nw.ID || n == nw.V1Name {
			return nw, nil
		}
	}
	return Network{}, fmt.Errorf("%w: %q", ErrUnknownNetwork, name)
}

// NormalizeNetwork returns the CAIP-2 form of a network name: a known
// version 1 name is translated, anything else is returned lower-cased and
// trimmed. Two names denote the same network exactly when their normalized
// forms are equal.
func NormalizeNetwork(name string) string {
	if nw, err := LookupNetwork(name); err == nil {
		return nw.ID
	}
	return strings.ToLower(strings.TrimSpace(name))
}

// V1NetworkName returns the version 1 name of a network, or the name
// unchanged when the network has no version 1 name in the table.
func V1NetworkName(name string) string {
	if nw, err := LookupNetwork(name); err == nil {
		return nw.V1Name
	}
	return name
}

// NetworkForVersion spells a network the way the given protocol version
// does: the CAIP-2 identifier for version 2, the version 1 name for
// version 1 (when known).
func NetworkForVersion(name string, version int) string {
	if version == Version1 {
		return V1NetworkName(name)
	}
	return NormalizeNetwork(name)
}

// EVMChainID returns the chain id of an EVM network: a known network's
// ChainID, or the reference of an "eip155:<n>" identifier. It reports false
// for anything else.
func EVMChainID(name string) (int64, bool) {
	if nw, err := LookupNetwork(name); err == nil {
		return nw.ChainID, true
	}
	ref, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(name)), "eip155:")
	if !ok || ref == "" || len(ref) > 18 {
		return 0, false
	}
	for _, c := range ref {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(ref, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}
