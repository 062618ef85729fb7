package cloudflare

import (
	_ "embed"
)

// DispatchWorkerModuleName is the module name the dispatch worker is
// uploaded under (its main_module).
const DispatchWorkerModuleName = "dispatch.js"

//go:embed worker/dispatch.js
var dispatchWorkerJS []byte

// DispatchWorkerScript returns the dispatch worker's source: an ES module
// with no imports that expects the bindings DISPATCHER (dispatch namespace),
// TENANT_DIRECTORY_JSON (edge mode) and DISPATCH_SECRET (gateway mode). The
// slice is a copy.
func DispatchWorkerScript() []byte {
	return append([]byte(nil), dispatchWorkerJS...)
}
