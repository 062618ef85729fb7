// This directory holds JavaScript tests and their node_modules; this file
// keeps it out of the main module, so go commands over ./... skip it.
module github.com/402claw/dispatcher/adapters/cloudflare/worker/test

go 1.26
