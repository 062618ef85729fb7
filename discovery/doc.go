// Package discovery makes a marketplace's paid APIs findable by agents,
// following the x402 Bazaar extension (specs/extensions/bazaar.md) and the
// discovery API of the x402 v2 specification (section 8).
//
// # Bazaar declarations
//
// A tenant route may carry a "discovery" object (see Declaration): example
// query parameters, headers, path parameters, a body and an output example.
// BazaarExtension turns it into the value of extensions.bazaar of the
// route's 402 challenge:
//
//	{"info": {"input": {"type": "http", "method": "GET", "queryParams": {...}, "pathParams": {...}},
//	          "output": {"type": "json", "example": {...}}},
//	 "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", ...},
//	 "routeTemplate": "/t/weather/forecast/:city"}
//
// info always validates against schema (a test checks it with the ajv-based
// helpers of the npm package @x402/extensions), routeTemplate is present
// only for routes with ":name" or "*" segments (a "*" is named ":rest")
// and always satisfies the Bazaar's template rules. A bad declaration is an
// error naming the field ("discovery.queryParams.units.enum: is empty").
//
// # Discovery API
//
// Handler serves GET /discovery/resources, the catalog of every priced
// endpoint of every tenant in the live directory, in the x402 v2 list format
// with pagination, the Bazaar filters (type, payTo, scheme, network,
// extensions; others are named in unappliedFilters) and 30-day quality
// figures from analytics; and GET /.well-known/x402, the host's manifest
// pointing to the catalog. The accepts entries come from the payment
// configuration through the Offers port, so the catalog offers exactly what
// the 402 will ask for.
//
// Nothing in the core imports this package: the example server mounts the
// handler and the payment stage calls BazaarExtension.
package discovery
