package ledger

import "strings"

// Statuses of batch-settlement channel entries (x402/channel). A charge is
// an offchain debit of a channel: the request was served and the amount is
// owed, with no transaction yet. A claim moves charged amounts into the
// escrow's claimed total, onchain (TxHash set). A sweep is the escrow's
// "settle": it transfers claimed funds of many channels to the receiver
// (TxHash set, no Channel).
//
// Charges are the revenue: a claim and a sweep move money already
// charged, so summing revenue means summing StatusSettled and
// StatusCharged entries, never claims or sweeps.
const (
	// StatusCharged: a request was charged on a channel. Channel and
	// Cumulative (chargedCumulativeAmount after it) are set.
	StatusCharged Status = "charged"
	// StatusClaimed: charges of a channel were claimed onchain. Channel
	// and Cumulative (the claimed total after it) are set; Amount is the
	// increase.
	StatusClaimed Status = "claimed"
	// StatusSwept: claimed funds were settled to the receiver.
	StatusSwept Status = "swept"
)

// Audit kinds of the channel entries, written only with the entry.
const (
	KindSettlementCharged = "settlement_charged"
	KindSettlementClaimed = "settlement_claimed"
	KindSettlementSwept   = "settlement_swept"
)

// IsChannel reports whether s is a channel status (charged, claimed or
// swept).
func (s Status) IsChannel() bool {
	return s == StatusCharged || s == StatusClaimed || s == StatusSwept
}

// Revenue reports whether an entry with status s is money a payer owes or
// paid for a request: a settled payment or a channel charge. Pending
// settlements are not final; failed ones, claims and sweeps are not
// revenue.
func (s Status) Revenue() bool { return s == StatusSettled || s == StatusCharged }

// validChannelID reports whether id is a channel id as x402/channel writes
// it: 0x and 64 lower-case hex digits.
func validChannelID(id string) bool {
	if len(id) != 66 || !strings.HasPrefix(id, "0x") {
		return false
	}
	for i := 2; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// normalizeChannel checks the channel fields against the status: charges
// and claims name their channel and cumulative amount, every other entry
// has neither.
func (e *Entry) normalizeChannel() error {
	switch e.Status {
	case StatusCharged, StatusClaimed:
		if !validChannelID(e.Channel) {
			return invalidf("entry %s/%s: %s entry needs a channel id (0x and 64 lower-case hex digits), got %q", e.Tenant, e.IdempotencyKey, e.Status, e.Channel)
		}
		if !isDigits(e.Cumulative) {
			return invalidf("entry %s/%s: cumulative amount %q is not a non-negative integer", e.Tenant, e.IdempotencyKey, e.Cumulative)
		}
		e.Cumulative = trimZeros(e.Cumulative)
	default:
		if e.Channel != "" || e.Cumulative != "" {
			return invalidf("entry %s/%s: a %s entry has no channel or cumulative amount", e.Tenant, e.IdempotencyKey, e.Status)
		}
	}
	return nil
}
