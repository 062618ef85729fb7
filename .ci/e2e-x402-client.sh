#!/usr/bin/env bash
# End-to-end: the real x402 npm clients pay examples/httpserver (v2 and v1,
# plus replays). See e2e/x402client/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/x402client/run.sh
