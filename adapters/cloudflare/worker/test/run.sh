#!/usr/bin/env bash
# Runs the dispatch worker's JavaScript tests: the shared cases
# (testdata/cases.json) against the JS port, and dispatch.js itself in
# workerd through miniflare. Needs Node.js >= 20.18.1 and the npm registry
# (or an npm cache / node_modules that already holds the locked packages).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1; then
	echo "run.sh: node is not installed" >&2
	exit 1
fi

# npm ci installs exactly package-lock.json; --prefer-offline uses the npm
# cache when it has the packages and the registry when it does not. If the
# install fails but a complete node_modules is already there, go on with it.
if ! npm ci --prefer-offline --no-audit --no-fund --loglevel=error; then
	if [ -f node_modules/miniflare/package.json ]; then
		echo "run.sh: npm ci failed; using the node_modules already installed" >&2
	else
		exit 1
	fi
fi

exec node --test cases.test.mjs worker.test.mjs
