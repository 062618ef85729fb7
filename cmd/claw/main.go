// Command claw operates a 402claw gateway from the command line, through
// its admin API (DESIGN section 17):
//
//	claw deploy data.csv --slug cities --price 0.001 --directory data   publish a CSV as a paid API
//	claw tenants                                                        list tenants (an owner sees their own)
//	claw rm cities                                                      remove a tenant (and its uploaded data set)
//	claw pay 'http://127.0.0.1:8402/t/cities/rows?limit=1'              pay for one request with a test key
//	claw payments <idempotency key or authorization id>                 what the ledger recorded for a payment
//	claw verify                                                         check the ledger's audit chain
//	claw top [--window today|week|overall] [--top 25]                   the marketplace leaderboard
//
// The gateway URL and the token (the admin token or an owner's API key)
// come from --url / --token or CLAW_URL / CLAW_TOKEN; the URL defaults to
// the example server's http://127.0.0.1:8402. Flags may come before or
// after the arguments.
//
// Exit codes: 0 success, 1 the operation failed (the gateway refused it, a
// payment failed, the audit chain is broken, nothing found), 2 bad usage.
// Every failure is one line on standard error.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
