package ledger

// Statuses of batch-settlement channel entries (x402/channel): a charge is
// an offchain debit of a channel (no transaction), a claim moves charged
// amounts into the escrow's claimed total (a transaction), and a settle
// sweeps claimed funds to the receiver (StatusSettled, with its
// transaction hash). Status.Valid does not accept them yet: entry.go's
// switch must list them before the ledger can store channel entries.
const (
	// StatusCharged: a request was charged on a channel.
	StatusCharged Status = "charged"
	// StatusClaimed: charges were claimed on chain.
	StatusClaimed Status = "claimed"
)
