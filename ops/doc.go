// Package ops operates a running platform (DESIGN section 17): the admin
// API that changes the tenant directory at runtime, owners and their API
// keys, uploaded data sets for the built-in CSV worker, the public payment
// status route and the ledger check.
//
// The pieces:
//
//   - [AdminHandler] serves /__platform/tenants, /users, /keys, /datasets,
//     /payments and /ledger/verify, and passes every other platform route to
//     the handler it wraps (the metrics platform handler). Mount it as the
//     dispatcher's Platform handler.
//   - [Users] (with [Accounts] over it) and [Datasets] are storage ports;
//     adapters/memory, adapters/sqlite and adapters/postgres implement both
//     and run the conformance suites in ops/opstest.
//   - [Watch] keeps a replica's tenant.Registry in step with the tenants
//     store, so a change made on one replica is served by all within the
//     poll interval (one second by default).
//
// # Directory changes
//
// A change (PUT or DELETE of one tenant) is made under a per-process lock:
// the current tenants are read from the store, the change applied, the
// whole directory validated (a bad change is 400 bad_request naming the
// tenant and field, and nothing changes), saved, swapped into the registry
// and audited as a directory_swap record (slug, operation, the tenant as
// stored, who made it: "admin" or "user:<id>", and the new directory's
// Version). Across replicas, a store that implements [TenantUpdater] makes
// read-change-save one transaction; over a plain tenant.Store the last
// writer wins for the whole directory.
//
// # Owners
//
// An owner authenticates with an API key (Authorization: Bearer claw_...).
// Keys are stored as SHA-256 digests only and looked up on every request,
// so a revoked key stops working at once on every replica. An owner may
// create, change and delete only their own tenants and data sets (403
// forbidden otherwise); a tenant's ownerUserId is set from the key, and its
// hosts are the admin's to assign (host names are matched before paths, so
// a claimed host would capture others' traffic). An
// owner's tenant may name as its worker one of their own data sets
// (csv:<name>) or a worker no other owner's tenant uses.
package ops
