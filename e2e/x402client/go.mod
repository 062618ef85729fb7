// This directory holds JavaScript tests and their node_modules; this file
// keeps it out of the main module, so go commands over ./... skip it.
module github.com/402claw/dispatcher/e2e/x402client

go 1.26
