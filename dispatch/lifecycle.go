package dispatch

// Lifecycle is the analytics outcome of one tenant request: what happened
// to it, as the usage event records it. Stages set it on the Exchange, or
// carry it on the *Error they return; the dispatcher fills in LifecycleServed
// or LifecycleWorkerError when neither did.
type Lifecycle string

// The lifecycles of DESIGN section 9.
const (
	LifecycleServed                  Lifecycle = "served"
	LifecyclePaymentSettled          Lifecycle = "payment_settled"
	LifecyclePaymentReplayed         Lifecycle = "payment_replayed"
	LifecyclePaymentChallenged       Lifecycle = "payment_challenged"
	LifecyclePaymentInvalid          Lifecycle = "payment_invalid"
	LifecyclePaymentSettlementFailed Lifecycle = "payment_settlement_failed"
	LifecycleRateLimited             Lifecycle = "rate_limited"
	LifecycleUsageQuotaExceeded      Lifecycle = "usage_quota_exceeded"
	LifecycleSpendCapExceeded        Lifecycle = "spend_cap_exceeded"
	LifecycleWorkerError             Lifecycle = "worker_error"
)

// defaultLifecycle is the lifecycle of a request no stage labelled: the
// lifecycle its error carries, else one derived from its status.
func defaultLifecycle(x *Exchange) Lifecycle {
	if x.Err != nil {
		if l := lifecycleOf(x.Err); l != "" {
			return l
		}
		return LifecycleWorkerError
	}
	if x.Status >= 500 {
		return LifecycleWorkerError
	}
	return LifecycleServed
}
