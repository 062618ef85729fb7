package eip712_test

import (
	"fmt"

	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// A scheme hashes its struct with the word encoders, takes the EIP-712
// digest in its domain, and recovers the signer through a cache so that
// verify and settle pay for one recovery.
func Example() {
	key := secp256k1.PrivKeyFromBytes([]byte("an example key, never for funds!"))
	typeHash := eip712.Keccak256([]byte("Mail(address to,uint256 amount)"))
	to, _ := eip712.Address("0x209693Bc6afc0C5328bA36FaF03C514EF312287C")
	amount, _ := eip712.Uint256("10000")
	digest, _ := eip712.Digest(eip712.Domain{Name: "Example", Version: "1", ChainID: 84532,
		VerifyingContract: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"},
		eip712.Keccak256(typeHash[:], to[:], amount[:]))
	sig, _ := eip712.Sign(key, digest)

	cache := eip712.NewRecoverCache(0)
	for range 2 {
		signer, err := cache.Recover(digest, sig)
		fmt.Println(signer == eip712.PublicKeyAddress(key.PubKey()), err)
	}
	hits, misses := cache.Stats()
	fmt.Println("hits", hits, "misses", misses)
	// Output:
	// true <nil>
	// true <nil>
	// hits 1 misses 1
}
