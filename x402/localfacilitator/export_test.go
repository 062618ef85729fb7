package localfacilitator

// RecoverStats exposes the signer cache's counters to the tests.
func (f *Facilitator) RecoverStats() (hits, misses uint64) {
	if f.signers == nil {
		return 0, 0
	}
	return f.signers.Stats()
}
