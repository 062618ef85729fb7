package postgres

import "time"

// ChainStats reports the groups and appends s wrote to the audit chain and
// how long it held the chain's lock doing so.
func ChainStats(s *Store) (groups, appends int64, held time.Duration) {
	return s.chain.groups.Load(), s.chain.appends.Load(), time.Duration(s.chain.heldNanos.Load())
}
