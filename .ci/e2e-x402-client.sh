#!/usr/bin/env bash
# End-to-end: the real x402 npm clients pay examples/httpserver: exact over
# EIP-3009 (v2 and v1), exact over Permit2 and upto (v2), replays, the
# real clients' Permit2/upto payments against the built-in local
# facilitator, and batch-settlement payment channels (deposit, vouchers,
# corrective 402s and their recovery, refunds). See e2e/x402client/
# (E2E_PERMIT2_PATH, E2E_UPTO_PATH, E2E_UPTO_MAX, E2E_UPTO_CHARGE,
# E2E_CHANNEL_PATH, E2E_CHANNEL_MAX and E2E_CHANNEL_CHARGE override the
# scheme routes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/x402client/run.sh
