// Package marketplace is the marketplace's front for people: server-rendered
// HTML pages over the live tenant directory and the usage analytics, and the
// HTML face of a 402 for browsers.
//
// New returns the handler of the pages: GET / (hero figures, the trending
// leaderboard with a today/week/overall switch, the directories) and
// GET /apis/<slug> (an API's routes, prices and schemes, copyable curl and
// payclient command lines, and an inline SVG chart of calls per hour). The
// pages use html/template, so every string a tenant gives is escaped; they
// are complete without JavaScript, and a small embedded script (no CDN)
// refreshes the leaderboard from /__platform/analytics. Rendered pages are
// cached for about two seconds, so requests cannot be used to burn CPU.
//
// WantsHTML and Paywall serve the payment stage: a browser that asks for a
// paid resource gets the 402 as a readable page (what it costs, in which
// asset on which network, and how to pay), with the same status and
// PAYMENT-REQUIRED header as any x402 client.
//
// The pages are tested in headless Chromium (chromedp): see browser_test.go.
// Nothing in the core imports this package.
package marketplace
