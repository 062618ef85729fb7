// End-to-end test: the real x402 clients published on npm pay the example
// server (examples/httpserver) through its built-in local facilitator.
//
//   1. v2: @x402/fetch + @x402/evm (ExactEvmScheme for eip155:84532) reads the
//      PAYMENT-REQUIRED header and pays with PAYMENT-SIGNATURE.
//   2. v1: the legacy x402-fetch client reads the JSON body of the same 402
//      and pays with X-PAYMENT.
//   3./4. Replays of the exact same signed headers are answered from the
//      idempotency store (X-Payment-Deduped: true, same body) and the event
//      log shows payment_replayed, not a second payment_settled.
//   5. The same signed header on a different request is refused (422
//      idempotency_key_reused) and settles nothing.
//   6. exact over Permit2: the real ExactEvmScheme picks the route's
//      exact entry with extra.assetTransferMethod "permit2" and signs a
//      Permit2 PermitWitnessTransferFrom; the gateway settles it once and
//      answers its replay from the idempotency store.
//   7. upto: the real UptoEvmScheme signs the route's maximum; the worker
//      reports its charge in Settlement-Overrides; the settle response
//      carries the charge (not the maximum), the header never reaches the
//      client, and the replay is deduplicated.
//   8. batch-settlement: the real BatchSettlementEvmScheme, driven by
//      @x402/fetch, opens a payment channel (deposit + first voucher) and
//      pays with vouchers; a client that lost its channel record and one
//      whose record went stale get corrective 402s and recover as the
//      library does (from the server's signed voucherState); the library's
//      refund() takes part and then all of the remainder back without
//      calling the worker, and the channel is funded again afterwards.
//
// The server is built and started here; it is killed at the end, also on
// failure. Run with: node --test x402client.test.mjs (see run.sh).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { wrapFetchWithPayment, x402Client, x402HTTPClient, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import {
  BatchSettlementEvmScheme,
  InMemoryClientChannelStorage,
  computeChannelId,
  signVoucher,
} from "@x402/evm/batch-settlement/client";
import { privateKeyToAccount } from "viem/accounts";
import { encodeAbiParameters, keccak256, verifyTypedData } from "viem";
import { randomBytes } from "node:crypto";
import {
  wrapFetchWithPayment as wrapFetchWithPaymentV1,
  createSigner as createSignerV1,
  decodeXPaymentResponse,
} from "x402-fetch";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "..", "..");

// Public test key from the shared x402 fixtures: it never holds funds.
const PRIVATE_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const ADMIN_TOKEN = "e2e-token";
const TENANT = "demo-paid";
const PAID_PATH = `/t/${TENANT}/premium/rows?limit=2`;
const NETWORK_V2 = "eip155:84532";
const NETWORK_V1 = "base-sepolia";
const USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PRICE_ATOMIC = "10000"; // $0.01 with 6 decimals

// The server runs with this directory's tenants.json (the demo worker's
// demo-paid tenant, whose routes pin what the tests pay; E2E_TENANTS=demo
// runs the server's built-in demo directory instead). The scheme tests pay
// a route offering only exact-permit2 at PRICE_ATOMIC, and one offering
// upto whose worker reports UPTO_CHARGE atomic units in
// Settlement-Overrides, below UPTO_MAX.
const TENANTS_FILE = process.env.E2E_TENANTS === "demo" ? null : path.join(here, "tenants.json");
const PERMIT2_PATH = process.env.E2E_PERMIT2_PATH ?? `/t/${TENANT}/rows?limit=2`;
const UPTO_PATH = process.env.E2E_UPTO_PATH ?? `/t/${TENANT}/metered/rows?limit=2`;
const UPTO_MAX = process.env.E2E_UPTO_MAX ?? "10000"; // maxPriceUsd 0.01
const UPTO_CHARGE = process.env.E2E_UPTO_CHARGE ?? "200"; // 0.0001 USD per row, two rows
// The batch-settlement route: a payment channel whose entry's amount is the
// per-request maximum (CHANNEL_MAX); the worker charges CHANNEL_CHARGE per
// request (0.0001 USD per row, two rows) in Settlement-Overrides.
const CHANNEL_PATH = process.env.E2E_CHANNEL_PATH ?? `/t/${TENANT}/channel/rows?limit=2`;
const CHANNEL_MAX = process.env.E2E_CHANNEL_MAX ?? "10000"; // maxPriceUsd 0.01
const CHANNEL_CHARGE = process.env.E2E_CHANNEL_CHARGE ?? "200";
const BATCH_SETTLEMENT_ADDRESS = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003";
const ERC3009_DEPOSIT_COLLECTOR = "0x4020806089470a89826cB9fB1f4059150b550004";
const CUMULATIVE_MISMATCH = "invalid_batch_settlement_evm_cumulative_amount_mismatch";
const PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3";
const EXACT_PERMIT2_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001";
const UPTO_PERMIT2_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002";

const account = privateKeyToAccount(PRIVATE_KEY);

// ---------------------------------------------------------------- server --

let tmpDir;
let server; // ChildProcess
let serverLog = "";
let baseURL;

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(" ")} exited ${code ?? signal}:\n${out}`));
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer(binary) {
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  serverLog = "";
  const args = ["-store", "memory", "-addr", addr, "-admin-token", ADMIN_TOKEN];
  if (TENANTS_FILE) args.push("-tenants", TENANTS_FILE);
  const child = spawn(
    binary,
    args,
    { cwd: tmpDir, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout.on("data", (d) => (serverLog += d));
  child.stderr.on("data", (d) => (serverLog += d));
  let exited = null;
  child.on("exit", (code, signal) => (exited = code ?? signal));
  server = child;
  const url = `http://${addr}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`server exited (${exited}) before it was healthy:\n${serverLog}`);
    try {
      const res = await fetch(`${url}/__platform/health`, { signal: AbortSignal.timeout(1000) });
      if (res.ok && (await res.json()).ok === true) return url;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`server not healthy after 30s:\n${serverLog}`);
}

async function stopServer() {
  const child = server;
  server = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

// Last resort if the runner dies without running after(): never leave the
// server behind.
process.on("exit", () => {
  if (server && server.exitCode === null) server.kill("SIGKILL");
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    if (server && server.exitCode === null) server.kill("SIGKILL");
    process.exit(1);
  });
}

// ------------------------------------------------------------- helpers --

// A fetch that records every request it sends and every answer it gets, so
// the tests can see what the x402 clients put on the wire.
function recordingFetch(log) {
  return async (input, init) => {
    const req = input instanceof Request && init === undefined ? input : new Request(input, init);
    const entry = { method: req.method, url: req.url, headers: new Headers(req.headers) };
    log.push(entry);
    const res = await fetch(req);
    entry.status = res.status;
    entry.responseHeaders = new Headers(res.headers);
    return res;
  };
}

function decodeB64JSON(value) {
  return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
}

async function tenantEvents() {
  const res = await fetch(`${baseURL}/__platform/events?limit=100`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(res.status, 200, `GET /__platform/events: ${res.status} ${await res.clone().text()}`);
  const { events } = await res.json();
  assert.ok(Array.isArray(events), "events is an array");
  const count = (lc) => events.filter((e) => e.apiId === TENANT && e.lifecycle === lc).length;
  return { settled: count("payment_settled"), replayed: count("payment_replayed"), events };
}

// Events are written asynchronously: poll until cond holds (or time out and
// return the last snapshot, so the assertion shows what was seen).
async function pollEvents(cond, ms = 5000) {
  const deadline = Date.now() + ms;
  let snap = await tenantEvents();
  while (!cond(snap) && Date.now() < deadline) {
    await sleep(100);
    snap = await tenantEvents();
  }
  return snap;
}

function checkRows(bodyText, contentType) {
  assert.match(contentType ?? "", /application\/json/, "paid answer is JSON");
  const body = JSON.parse(bodyText);
  assert.ok(Array.isArray(body.rows), `body has rows: ${bodyText.slice(0, 300)}`);
  assert.equal(body.rows.length, 2, "limit=2 gives two rows");
  return body;
}

// The state the tests pass along: the captured paid requests and answers.
const paid = {};

// ---------------------------------------------------------------- tests --

describe("real x402 npm clients against examples/httpserver", { concurrency: false }, () => {
  before(async () => {
    tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), "x402client-e2e-"));
    // E2E_HTTPSERVER_BIN: use an already built server instead (development).
    let binary = process.env.E2E_HTTPSERVER_BIN;
    if (!binary) {
      binary = path.join(tmpDir, "httpserver");
      await run("go", ["build", "-o", binary, "./examples/httpserver"], { cwd: repoRoot });
    }
    // A port picked as free can be taken before the server binds it: retry.
    for (let attempt = 1; ; attempt++) {
      try {
        baseURL = await startServer(binary);
        break;
      } catch (err) {
        await stopServer();
        if (attempt >= 3) throw err;
      }
    }
  }, { timeout: 15 * 60_000 });

  after(async () => {
    await stopServer();
    if (tmpDir) await fs.rm(tmpDir, { recursive: true, force: true });
  });

  test("v2: @x402/fetch + ExactEvmScheme pays with PAYMENT-SIGNATURE", { timeout: 60_000 }, async () => {
    const log = [];
    const client = new x402Client().register(NETWORK_V2, new ExactEvmScheme(account));
    const payFetch = wrapFetchWithPayment(recordingFetch(log), client);

    const res = await payFetch(baseURL + PAID_PATH);
    const text = await res.text();
    assert.equal(res.status, 200, `paid request: ${res.status} ${text}\nserver log:\n${serverLog}`);

    // The wire: an unpaid try answered 402 with the v2 header, then the paid one.
    assert.equal(log.length, 2, "one challenge, one paid request");
    assert.equal(log[0].status, 402);
    assert.ok(log[0].responseHeaders.get("payment-required"), "402 carries PAYMENT-REQUIRED");
    const challenge = decodeB64JSON(log[0].responseHeaders.get("payment-required"));
    assert.equal(challenge.x402Version, 2);
    const offer = challenge.accepts.find((a) => a.network === NETWORK_V2);
    assert.ok(offer, `an ${NETWORK_V2} offer in ${JSON.stringify(challenge.accepts)}`);
    assert.equal(offer.scheme, "exact");
    assert.equal(offer.asset.toLowerCase(), USDC_BASE_SEPOLIA.toLowerCase());
    assert.equal(offer.amount, PRICE_ATOMIC);

    const sig = log[1].headers.get("payment-signature");
    assert.ok(sig, "the v2 client paid with PAYMENT-SIGNATURE");
    assert.equal(log[1].headers.get("x-payment"), null, "and not with X-PAYMENT");
    const payload = decodeB64JSON(sig);
    assert.equal(payload.x402Version, 2);
    assert.equal(payload.payload.authorization.from.toLowerCase(), account.address.toLowerCase());
    assert.equal(payload.payload.authorization.value, PRICE_ATOMIC);

    checkRows(text, res.headers.get("content-type"));

    const header = res.headers.get("payment-response");
    assert.ok(header, "answer carries PAYMENT-RESPONSE");
    const settle = decodePaymentResponseHeader(header);
    assert.equal(settle.success, true, `settle response: ${JSON.stringify(settle)}`);
    assert.equal(settle.network, NETWORK_V2);
    assert.equal(settle.payer?.toLowerCase(), account.address.toLowerCase());
    assert.notEqual(res.headers.get("x-payment-deduped"), "true", "a first payment is not a replay");

    const key = res.headers.get("x-payment-idempotency-key");
    assert.ok(key, "answer carries X-Payment-Idempotency-Key");
    paid.v2 = { url: log[1].url, header: sig, body: text, key };
  });

  test("v1: legacy x402-fetch reads the JSON body and pays with X-PAYMENT", { timeout: 60_000 }, async () => {
    const log = [];
    const signer = await createSignerV1(NETWORK_V1, PRIVATE_KEY); // async in x402 1.2.0
    const payFetch = wrapFetchWithPaymentV1(recordingFetch(log), signer);

    const res = await payFetch(baseURL + PAID_PATH);
    const text = await res.text();
    assert.equal(res.status, 200, `paid request: ${res.status} ${text}\nserver log:\n${serverLog}`);

    assert.equal(log.length, 2, "one challenge, one paid request");
    assert.equal(log[0].status, 402);
    const xpay = log[1].headers.get("x-payment");
    assert.ok(xpay, "the v1 client paid with X-PAYMENT");
    assert.equal(log[1].headers.get("payment-signature"), null, "and not with PAYMENT-SIGNATURE");
    const payload = decodeB64JSON(xpay);
    assert.equal(payload.x402Version, 1);
    assert.equal(payload.network, NETWORK_V1);
    assert.equal(payload.payload.authorization.from.toLowerCase(), account.address.toLowerCase());
    assert.equal(payload.payload.authorization.value, PRICE_ATOMIC);

    checkRows(text, res.headers.get("content-type"));

    const header = res.headers.get("x-payment-response");
    assert.ok(header, "answer carries X-PAYMENT-RESPONSE");
    const settle = decodeXPaymentResponse(header);
    assert.equal(settle.success, true, `settle response: ${JSON.stringify(settle)}`);
    assert.equal(settle.network, NETWORK_V1);
    assert.equal(settle.payer?.toLowerCase(), account.address.toLowerCase());
    assert.notEqual(res.headers.get("x-payment-deduped"), "true", "a first payment is not a replay");

    const key = res.headers.get("x-payment-idempotency-key");
    assert.ok(key, "answer carries X-Payment-Idempotency-Key");
    assert.notEqual(key, paid.v2?.key, "two payments, two idempotency keys");
    paid.v1 = { url: log[1].url, header: xpay, body: text, key };
  });

  // Sends the captured header again, byte for byte, and checks that the
  // answer is the stored one and that no second settlement was recorded.
  async function replay(name, headerName, responseHeaderName, decode) {
    const first = paid[name];
    assert.ok(first, `the ${name} payment test must pass first`);

    // Every payment so far must be in the event log before we count.
    const expectSettled = Object.keys(paid).length;
    const before = await pollEvents((s) => s.settled >= expectSettled);
    assert.ok(before.settled >= expectSettled, `a payment_settled per payment so far (${before.settled} < ${expectSettled})`);

    const res = await fetch(first.url, { headers: { [headerName]: first.header } });
    const text = await res.text();
    assert.equal(res.status, 200, `replay: ${res.status} ${text}`);
    assert.equal(res.headers.get("x-payment-deduped"), "true", "replay carries X-Payment-Deduped: true");
    assert.equal(text, first.body, "replay returns the same body");
    assert.equal(res.headers.get("x-payment-idempotency-key"), first.key, "same idempotency key");
    const header = res.headers.get(responseHeaderName);
    if (header) assert.equal(decode(header).success, true, "replayed settle response says success");

    const afterReplay = await pollEvents((s) => s.replayed >= before.replayed + 1);
    assert.equal(afterReplay.replayed, before.replayed + 1, "one payment_replayed event");
    // Give a stray second settlement event time to show up, then recount.
    await sleep(500);
    const final = await tenantEvents();
    assert.equal(final.settled, before.settled, "no second payment_settled for the replay");
    assert.equal(final.replayed, before.replayed + 1);
  }

  test("replay of the v2 PAYMENT-SIGNATURE is deduplicated", { timeout: 60_000 }, () =>
    replay("v2", "PAYMENT-SIGNATURE", "payment-response", decodePaymentResponseHeader));

  test("replay of the v1 X-PAYMENT is deduplicated", { timeout: 60_000 }, () =>
    replay("v1", "X-PAYMENT", "x-payment-response", decodeXPaymentResponse));

  test("a signed payment cannot buy a different request", { timeout: 60_000 }, async () => {
    const first = paid.v2;
    assert.ok(first, "the v2 payment test must pass first");
    const before = await tenantEvents();
    const other = new URL(first.url);
    other.searchParams.set("limit", "3");
    const res = await fetch(other, { headers: { "PAYMENT-SIGNATURE": first.header } });
    const text = await res.text();
    assert.equal(res.status, 422, `reuse for another request: ${res.status} ${text}`);
    assert.equal(JSON.parse(text).error, "idempotency_key_reused");
    await sleep(500);
    const final = await tenantEvents();
    assert.equal(final.settled, before.settled, "no settlement for the reused payment");
    assert.equal(final.replayed, before.replayed, "and no replay");
  });

  // Pays path with a v2 client whose only registered scheme is scheme,
  // and returns the wire log, the answer and its decoded settle response.
  async function payV2(pathAndQuery, scheme) {
    const log = [];
    const client = new x402Client().register(NETWORK_V2, scheme);
    const payFetch = wrapFetchWithPayment(recordingFetch(log), client);
    const res = await payFetch(baseURL + pathAndQuery);
    const text = await res.text();
    assert.equal(log[0]?.status, 402, `unpaid try of ${pathAndQuery}: ${log[0]?.status}`);
    const challenge = decodeB64JSON(log[0].responseHeaders.get("payment-required"));
    assert.equal(res.status, 200, `paid request: ${res.status} ${text}\nchallenge: ${JSON.stringify(challenge.accepts)}\nserver log:\n${serverLog}`);
    assert.equal(log.length, 2, "one challenge, one paid request");
    const sig = log[1].headers.get("payment-signature");
    assert.ok(sig, "paid with PAYMENT-SIGNATURE");
    const header = res.headers.get("payment-response");
    assert.ok(header, "answer carries PAYMENT-RESPONSE");
    const settle = decodePaymentResponseHeader(header);
    assert.equal(settle.success, true, `settle response: ${JSON.stringify(settle)}`);
    assert.equal(settle.network, NETWORK_V2);
    assert.equal(settle.payer?.toLowerCase(), account.address.toLowerCase());
    assert.notEqual(res.headers.get("x-payment-deduped"), "true", "a first payment is not a replay");
    const key = res.headers.get("x-payment-idempotency-key");
    assert.ok(key, "answer carries X-Payment-Idempotency-Key");
    return { log, res, text, challenge, payment: decodeB64JSON(sig), sig, settle, key };
  }

  test("exact over Permit2: the real ExactEvmScheme picks the permit2 entry", { timeout: 60_000 }, async () => {
    const r = await payV2(PERMIT2_PATH, new ExactEvmScheme(account));
    const offer = r.challenge.accepts.find((a) => a.scheme === "exact" && a.extra?.assetTransferMethod === "permit2");
    assert.ok(offer, `a permit2 entry in ${JSON.stringify(r.challenge.accepts)}`);
    assert.equal(offer.amount, PRICE_ATOMIC);

    // What the client signed: a Permit2 witness transfer to payTo through
    // the exact proxy, of exactly the price.
    assert.deepEqual(r.payment.accepted, offer, "the client chose the permit2 entry");
    const a = r.payment.payload.permit2Authorization;
    assert.ok(a, `a permit2Authorization payload: ${JSON.stringify(r.payment.payload)}`);
    assert.equal(r.payment.payload.authorization, undefined, "not an EIP-3009 payload");
    assert.equal(a.from.toLowerCase(), account.address.toLowerCase());
    assert.equal(a.spender.toLowerCase(), EXACT_PERMIT2_PROXY.toLowerCase());
    assert.equal(a.permitted.token.toLowerCase(), USDC_BASE_SEPOLIA.toLowerCase());
    assert.equal(a.permitted.amount, PRICE_ATOMIC);
    assert.equal(a.witness.to.toLowerCase(), offer.payTo.toLowerCase());
    assert.ok(/^[0-9]+$/.test(a.nonce), "a uint256 nonce");
    // The signature is the payer's over the Permit2 domain (viem's own
    // EIP-712 verification, independent of the gateway's).
    assert.equal(await verifyTypedData({
      address: account.address,
      domain: { name: "Permit2", chainId: 84532, verifyingContract: PERMIT2_ADDRESS },
      primaryType: "PermitWitnessTransferFrom",
      types: {
        PermitWitnessTransferFrom: [
          { name: "permitted", type: "TokenPermissions" }, { name: "spender", type: "address" },
          { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" }, { name: "witness", type: "Witness" },
        ],
        TokenPermissions: [{ name: "token", type: "address" }, { name: "amount", type: "uint256" }],
        Witness: [{ name: "to", type: "address" }, { name: "validAfter", type: "uint256" }],
      },
      message: {
        permitted: { token: a.permitted.token, amount: BigInt(a.permitted.amount) }, spender: a.spender,
        nonce: BigInt(a.nonce), deadline: BigInt(a.deadline),
        witness: { to: a.witness.to, validAfter: BigInt(a.witness.validAfter) },
      },
      signature: r.payment.payload.signature,
    }), true, "the Permit2 signature verifies with viem");

    checkRows(r.text, r.res.headers.get("content-type"));
    assert.ok(/^0x[0-9a-f]{64}$/.test(r.settle.transaction), `a transaction: ${r.settle.transaction}`);
    if (r.settle.amount !== undefined) assert.equal(r.settle.amount, PRICE_ATOMIC);
    paid.permit2 = { url: r.log[1].url, header: r.sig, body: r.text, key: r.key };
  });

  test("upto: the real UptoEvmScheme pays the maximum, the worker's charge is settled", { timeout: 60_000 }, async () => {
    const r = await payV2(UPTO_PATH, new UptoEvmScheme(account));
    const offer = r.challenge.accepts.find((a) => a.scheme === "upto");
    assert.ok(offer, `an upto entry in ${JSON.stringify(r.challenge.accepts)}`);
    assert.equal(offer.amount, UPTO_MAX, "the entry's amount is the route's maximum");
    assert.match(offer.extra?.facilitatorAddress ?? "", /^0x[0-9a-fA-F]{40}$/, "extra.facilitatorAddress");

    const a = r.payment.payload.permit2Authorization;
    assert.ok(a, `a permit2Authorization payload: ${JSON.stringify(r.payment.payload)}`);
    assert.equal(a.spender.toLowerCase(), UPTO_PERMIT2_PROXY.toLowerCase());
    assert.equal(a.permitted.amount, UPTO_MAX, "the client signs the maximum");
    assert.equal(a.witness.to.toLowerCase(), offer.payTo.toLowerCase());
    assert.equal(a.witness.facilitator.toLowerCase(), offer.extra.facilitatorAddress.toLowerCase());

    checkRows(r.text, r.res.headers.get("content-type"));
    assert.equal(r.res.headers.get("settlement-overrides"), null, "the worker's Settlement-Overrides never reaches the client");
    assert.equal(r.settle.amount, UPTO_CHARGE, `charged the worker's amount, not the maximum: ${JSON.stringify(r.settle)}`);
    assert.ok(BigInt(r.settle.amount) < BigInt(UPTO_MAX));
    assert.ok(/^0x[0-9a-f]{64}$/.test(r.settle.transaction), `a transaction: ${r.settle.transaction}`);
    paid.upto = { url: r.log[1].url, header: r.sig, body: r.text, key: r.key, charge: r.settle.amount };
  });

  test("replay of the exact-permit2 payment is deduplicated", { timeout: 60_000 }, () =>
    replay("permit2", "PAYMENT-SIGNATURE", "payment-response", decodePaymentResponseHeader));

  test("replay of the upto payment is deduplicated and charges nothing more", { timeout: 60_000 }, async () => {
    await replay("upto", "PAYMENT-SIGNATURE", "payment-response", decodePaymentResponseHeader);
    const res = await fetch(paid.upto.url, { headers: { "PAYMENT-SIGNATURE": paid.upto.header } });
    await res.text();
    const header = res.headers.get("payment-response");
    if (header) {
      const settle = decodePaymentResponseHeader(header);
      assert.equal(settle.amount ?? paid.upto.charge, paid.upto.charge, "the replay reports the original charge");
    }
  });

  // The real clients sign against requirements shaped like the gateway's
  // exact-permit2 and upto entries, and the server's built-in local
  // facilitator (/__facilitator, the Go localfacilitator over HTTP, which
  // may ask for the admin token) verifies and settles what they signed.
  // This needs no payment-stage wiring, so it pins the Go side's interop
  // on its own.
  async function facilitator(path, body) {
    const headers = { Authorization: `Bearer ${ADMIN_TOKEN}` };
    if (body) headers["Content-Type"] = "application/json";
    const res = await fetch(`${baseURL}/__facilitator${path}`, {
      method: body ? "POST" : "GET",
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    assert.equal(res.status, 200, `${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  }

  function requirement(scheme, amount, extra) {
    return {
      scheme, network: NETWORK_V2, amount, asset: USDC_BASE_SEPOLIA,
      payTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", maxTimeoutSeconds: 60,
      extra: { name: "USDC", version: "2", ...extra },
    };
  }

  async function sign(scheme, req) {
    const client = new x402Client().register(NETWORK_V2, scheme);
    return client.createPaymentPayload({
      x402Version: 2,
      resource: { url: baseURL + "/t/demo-paid/x", description: "e2e", mimeType: "application/json" },
      accepts: [req],
    });
  }

  test("local facilitator: /supported announces upto with its facilitatorAddress", { timeout: 30_000 }, async () => {
    const sup = await facilitator("/supported");
    const upto = sup.kinds.find((k) => k.scheme === "upto" && k.network === NETWORK_V2);
    assert.ok(upto, `an upto kind in ${JSON.stringify(sup.kinds)}`);
    assert.match(upto.extra?.facilitatorAddress ?? "", /^0x[0-9a-fA-F]{40}$/);
    assert.ok(sup.kinds.find((k) => k.scheme === "exact" && k.network === NETWORK_V2 && k.x402Version === 2));
  });

  test("local facilitator verifies and settles the real client's exact-permit2 payment once", { timeout: 30_000 }, async () => {
    const req = requirement("exact", PRICE_ATOMIC, { assetTransferMethod: "permit2" });
    const paymentPayload = await sign(new ExactEvmScheme(account), req);
    assert.ok(paymentPayload.payload.permit2Authorization, "the client signed Permit2");
    const body = { x402Version: 2, paymentPayload, paymentRequirements: req };
    const vr = await facilitator("/verify", body);
    assert.deepEqual(vr, { isValid: true, payer: account.address });
    const sr = await facilitator("/settle", body);
    assert.equal(sr.success, true, JSON.stringify(sr));
    if (sr.amount !== undefined) assert.equal(sr.amount, PRICE_ATOMIC);
    assert.match(sr.transaction, /^0x[0-9a-f]{64}$/);
    const again = await facilitator("/settle", body);
    assert.equal(again.success, false, "single-use nonce");

    // A tampered copy (amount raised in the signed message) is refused.
    const tampered = structuredClone(paymentPayload);
    tampered.payload.permit2Authorization.permitted.amount = "20000";
    const bad = await facilitator("/verify", { ...body, paymentPayload: tampered, paymentRequirements: { ...req, amount: "20000" } });
    assert.equal(bad.isValid, false);
    assert.equal(bad.invalidReason, "invalid_permit2_signature");
  });

  test("local facilitator settles the real client's upto payment for the charge", { timeout: 30_000 }, async () => {
    const sup = await facilitator("/supported");
    const facilitatorAddress = sup.kinds.find((k) => k.scheme === "upto").extra.facilitatorAddress;
    const req = requirement("upto", UPTO_MAX, { facilitatorAddress });
    const paymentPayload = await sign(new UptoEvmScheme(account), req);
    const a = paymentPayload.payload.permit2Authorization;
    assert.equal(a.witness.facilitator.toLowerCase(), facilitatorAddress.toLowerCase());
    const vr = await facilitator("/verify", { x402Version: 2, paymentPayload, paymentRequirements: req });
    assert.equal(vr.isValid, true, JSON.stringify(vr));

    // Over the maximum: refused. The charge: settled, once.
    const over = await facilitator("/settle", { x402Version: 2, paymentPayload, paymentRequirements: { ...req, amount: (BigInt(UPTO_MAX) + 1n).toString() } });
    assert.equal(over.success, false);
    assert.equal(over.errorReason, "invalid_upto_evm_payload_settlement_exceeds_amount");
    const sr = await facilitator("/settle", { x402Version: 2, paymentPayload, paymentRequirements: { ...req, amount: UPTO_CHARGE } });
    assert.equal(sr.success, true, JSON.stringify(sr));
    assert.equal(sr.amount, UPTO_CHARGE);
    const again = await facilitator("/settle", { x402Version: 2, paymentPayload, paymentRequirements: { ...req, amount: UPTO_CHARGE } });
    assert.equal(again.success, false, "single-use nonce");

    // Signed for another facilitator: refused.
    const other = await sign(new UptoEvmScheme(account), { ...req, extra: { ...req.extra, facilitatorAddress: "0x1111111111111111111111111111111111111111" } });
    const vr2 = await facilitator("/verify", { x402Version: 2, paymentPayload: other, paymentRequirements: req });
    assert.equal(vr2.isValid, false);
  });

  // ------------------------------------------------- batch-settlement --
  //
  // The real BatchSettlementEvmScheme pays the channel route. Its builders
  // are the library's own (deposit with ERC-3009 ReceiveWithAuthorization,
  // vouchers, refunds, the corrective-402 recovery); nothing here signs for
  // it except the stale voucher of the low-level test, made with the
  // library's signVoucher.

  // There is no chain: the escrow is the local facilitator's emulation. The
  // client reads channels(channelId) -> (balance, totalClaimed) on a cold
  // start, before a refund and to check a corrective 402; this signer
  // answers that read from the escrow's own snapshots as the gateway relays
  // them in the PAYMENT-RESPONSE of each onchain operation the client saw
  // (a deposit, a refund). A channel never seen reads (0, 0), as on chain.
  const chain = new Map(); // channel id (lower case) -> { balance, totalClaimed }
  const chainReads = [];
  const chainSigner = {
    address: account.address,
    signTypedData: (args) => account.signTypedData(args),
    async readContract({ address, functionName, args }) {
      if (address.toLowerCase() !== BATCH_SETTLEMENT_ADDRESS.toLowerCase() || functionName !== "channels") {
        throw new Error(`unexpected chain read ${functionName} at ${address}`);
      }
      const id = String(args[0]).toLowerCase();
      chainReads.push(id);
      const c = chain.get(id);
      return [BigInt(c?.balance ?? 0), BigInt(c?.totalClaimed ?? 0)];
    },
  };

  // recordingFetch that also keeps each answer's body and feeds the chain
  // view from onchain operations' settle responses.
  function channelFetch(log) {
    const inner = recordingFetch(log);
    return async (input, init) => {
      const res = await inner(input, init);
      const entry = log[log.length - 1];
      entry.body = await res.clone().text();
      const header = res.headers.get("payment-response");
      if (header) {
        const sr = decodePaymentResponseHeader(header);
        const cs = sr.extra?.channelState;
        if (sr.success && sr.transaction && cs?.channelId) {
          chain.set(cs.channelId.toLowerCase(), { balance: cs.balance, totalClaimed: cs.totalClaimed });
        }
      }
      return res;
    };
  }

  // A one-line account of a wire log, for assertion messages.
  function wire(log) {
    return log.map((e) => {
      const sig = e.headers.get("payment-signature");
      const p = sig ? decodeB64JSON(sig).payload : undefined;
      const pr = e.status === 402 && e.responseHeaders.get("payment-required");
      const err = pr ? decodeB64JSON(pr).error : undefined;
      return `${p ? `${p.type}(${p.voucher?.maxClaimableAmount})` : "unpaid"} -> ${e.status}${err ? ` ${err}` : ""}`;
    }).join("; ");
  }

  async function facilitatorCalls(op) {
    const text = await (await fetch(`${baseURL}/metrics`)).text();
    const m = text.match(new RegExp(`^dispatcher_facilitator_duration_seconds_count\\{op="${op}"\\} (\\d+)$`, "m"));
    return m ? Number(m[1]) : 0;
  }

  // Verifies a voucher signature with viem, in the batch-settlement domain.
  async function voucherSignedBy(channelId, maxClaimableAmount, signature) {
    return verifyTypedData({
      address: account.address,
      domain: { name: "x402 Batch Settlement", version: "1", chainId: 84532, verifyingContract: BATCH_SETTLEMENT_ADDRESS },
      primaryType: "Voucher",
      types: { Voucher: [{ name: "channelId", type: "bytes32" }, { name: "maxClaimableAmount", type: "uint128" }] },
      message: { channelId, maxClaimableAmount: BigInt(maxClaimableAmount) },
      signature,
    });
  }

  // Pays the channel route with scheme through @x402/fetch and checks the
  // 200 answer: rows, a successful PAYMENT-RESPONSE for the payer.
  async function payChannel(scheme) {
    const log = [];
    const client = new x402Client().register(NETWORK_V2, scheme);
    const res = await wrapFetchWithPayment(channelFetch(log), client)(baseURL + CHANNEL_PATH);
    const text = await res.text();
    assert.equal(res.status, 200, `paid request: ${res.status} ${text}\nwire: ${wire(log)}\nserver log:\n${serverLog}`);
    checkRows(text, res.headers.get("content-type"));
    const last = log[log.length - 1];
    const payment = decodeB64JSON(last.headers.get("payment-signature"));
    const header = res.headers.get("payment-response");
    assert.ok(header, "answer carries PAYMENT-RESPONSE");
    const settle = decodePaymentResponseHeader(header);
    assert.equal(settle.success, true, `settle response: ${JSON.stringify(settle)}`);
    assert.equal(settle.network, NETWORK_V2);
    assert.equal(settle.payer?.toLowerCase(), account.address.toLowerCase());
    assert.equal(res.headers.get("settlement-overrides"), null, "the worker's Settlement-Overrides never reaches the client");
    return { log, res, text, payment, settle };
  }

  // Checks a corrective 402 against the channel as the tests know it.
  async function checkCorrective(pr, ch) {
    assert.equal(pr.x402Version, 2);
    assert.equal(pr.error, CUMULATIVE_MISMATCH, `the 402's error: ${JSON.stringify(pr.error)}`);
    const entry = pr.accepts.find((a) => a.scheme === "batch-settlement");
    assert.ok(entry, `a batch-settlement entry in ${JSON.stringify(pr.accepts)}`);
    for (const k of ["receiverAuthorizer", "withdrawDelay", "name", "version"]) {
      assert.deepEqual(entry.extra[k], ch.offer.extra[k], `the corrective entry keeps extra.${k}`);
    }
    assert.equal(entry.amount, ch.offer.amount);
    const cs = entry.extra.channelState;
    const vs = entry.extra.voucherState;
    assert.ok(cs && vs, `extra.channelState and extra.voucherState: ${JSON.stringify(entry.extra)}`);
    assert.equal(cs.channelId.toLowerCase(), ch.id.toLowerCase());
    assert.equal(cs.chargedCumulativeAmount, ch.charged.toString(), "channelState.chargedCumulativeAmount is the server's");
    assert.equal(cs.balance, ch.balance.toString());
    assert.equal(vs.signedMaxClaimable, ch.lastVoucher.maxClaimableAmount, "voucherState is the last voucher served");
    assert.equal(vs.signature, ch.lastVoucher.signature);
    assert.equal(await voucherSignedBy(ch.id, vs.signedMaxClaimable, vs.signature), true, "voucherState is signed by the payer");
    return entry;
  }

  // What the channel tests share: the channel as the server should see it.
  const chan = { salt: "0x" + randomBytes(32).toString("hex") };

  test("batch-settlement: @x402/fetch + BatchSettlementEvmScheme deposits once, then pays with vouchers", { timeout: 60_000 }, async () => {
    const storage = new InMemoryClientChannelStorage();
    const scheme = new BatchSettlementEvmScheme(chainSigner, { salt: chan.salt, storage });
    const sup = await facilitator("/supported");
    const kind = sup.kinds.find((k) => k.scheme === "batch-settlement" && k.network === NETWORK_V2);
    assert.ok(kind, `a batch-settlement kind in ${JSON.stringify(sup.kinds)}`);

    // 1. The channel opens: the deposit carries the first voucher.
    const r = await payChannel(scheme);
    assert.equal(r.log.length, 2, `one challenge, one paid request: ${wire(r.log)}`);
    assert.equal(r.log[0].status, 402);
    const challenge = decodeB64JSON(r.log[0].responseHeaders.get("payment-required"));
    const offer = challenge.accepts.find((a) => a.scheme === "batch-settlement");
    assert.ok(offer, `a batch-settlement entry in ${JSON.stringify(challenge.accepts)}`);
    assert.equal(offer.network, NETWORK_V2);
    assert.equal(offer.amount, CHANNEL_MAX, "the entry's amount is the per-request maximum");
    assert.equal(offer.asset.toLowerCase(), USDC_BASE_SEPOLIA.toLowerCase());
    assert.equal(offer.extra.receiverAuthorizer.toLowerCase(), kind.extra.receiverAuthorizer.toLowerCase(), "the facilitator's receiverAuthorizer");
    assert.equal(offer.extra.withdrawDelay, 900);
    assert.equal(offer.extra.name, "USDC");
    assert.equal(offer.extra.version, "2");
    assert.equal(offer.extra.channelState, undefined, "a plain challenge carries no channel state");

    const pl = r.payment.payload;
    assert.equal(pl.type, "deposit", `a new channel is opened with a deposit: ${JSON.stringify(pl)}`);
    assert.deepEqual(r.payment.accepted, offer, "the client chose the batch-settlement entry");
    const cfg = pl.channelConfig;
    assert.deepEqual(cfg, {
      payer: account.address, payerAuthorizer: account.address, receiver: offer.payTo,
      receiverAuthorizer: offer.extra.receiverAuthorizer, token: offer.asset, withdrawDelay: offer.extra.withdrawDelay, salt: chan.salt,
    });
    const id = computeChannelId(cfg, NETWORK_V2);
    assert.equal(pl.voucher.channelId, id, "the voucher names the channel the config hashes to");
    assert.equal(pl.voucher.maxClaimableAmount, CHANNEL_MAX, "first voucher: 0 + amount");
    assert.equal(await voucherSignedBy(id, pl.voucher.maxClaimableAmount, pl.voucher.signature), true);
    const deposit = BigInt(pl.deposit.amount);
    assert.ok(deposit >= BigInt(CHANNEL_MAX), `the deposit ${deposit} covers the first voucher`);
    // The ERC-3009 ReceiveWithAuthorization to the deposit collector, its
    // nonce bound to the channel (viem's verification, not the gateway's).
    const a = pl.deposit.authorization.erc3009Authorization;
    assert.ok(a, `an erc3009Authorization: ${JSON.stringify(pl.deposit)}`);
    assert.equal(await verifyTypedData({
      address: account.address,
      domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: offer.asset },
      primaryType: "ReceiveWithAuthorization",
      types: {
        ReceiveWithAuthorization: [
          { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
          { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
        ],
      },
      message: {
        from: account.address, to: ERC3009_DEPOSIT_COLLECTOR, value: deposit,
        validAfter: BigInt(a.validAfter), validBefore: BigInt(a.validBefore),
        nonce: keccak256(encodeAbiParameters([{ type: "bytes32" }, { type: "uint256" }], [id, BigInt(a.salt)])),
      },
      signature: a.signature,
    }), true, "the deposit authorization verifies with viem");

    // The deposit is an onchain transaction; the request itself is charged
    // on the channel.
    assert.match(r.settle.transaction, /^0x[0-9a-f]{64}$/, `the deposit's transaction: ${JSON.stringify(r.settle)}`);
    assert.equal(r.settle.amount, deposit.toString(), "the settle amount is the deposit");
    assert.equal(r.settle.extra?.chargedAmount, CHANNEL_CHARGE, "charged the worker's amount, not the maximum");
    let cs = r.settle.extra.channelState;
    assert.equal(cs.channelId.toLowerCase(), id.toLowerCase());
    assert.equal(cs.chargedCumulativeAmount, CHANNEL_CHARGE);
    assert.equal(cs.balance, deposit.toString());
    assert.equal(cs.totalClaimed, "0");
    const rec = await storage.get(id);
    assert.deepEqual([rec?.chargedCumulativeAmount, rec?.balance], [CHANNEL_CHARGE, deposit.toString()],
      `the library recorded the channel from the PAYMENT-RESPONSE: ${JSON.stringify(rec)}`);

    // 2. Vouchers: each signs chargedCumulativeAmount + amount, is checked
    // by the gateway alone (no facilitator verify) and moves nothing on
    // chain.
    const verifies = await facilitatorCalls("verify");
    let charged = BigInt(CHANNEL_CHARGE);
    let last = pl.voucher;
    for (let i = 0; i < 3; i++) {
      const v = await payChannel(scheme);
      assert.equal(v.log.length, 2, `one challenge, one paid request: ${wire(v.log)}`);
      const p = v.payment.payload;
      assert.equal(p.type, "voucher", "an open channel is paid with a voucher");
      assert.deepEqual(p.channelConfig, cfg);
      assert.equal(p.voucher.channelId, id);
      assert.equal(p.voucher.maxClaimableAmount, (charged + BigInt(CHANNEL_MAX)).toString(), "maxClaimableAmount = chargedCumulativeAmount + amount");
      assert.equal(v.settle.transaction, "", "a voucher moves nothing on chain");
      assert.ok(v.settle.amount === undefined || v.settle.amount === "", `no settle amount: ${JSON.stringify(v.settle)}`);
      assert.equal(v.settle.extra?.chargedAmount, CHANNEL_CHARGE);
      charged += BigInt(CHANNEL_CHARGE);
      cs = v.settle.extra.channelState;
      assert.equal(cs.channelId.toLowerCase(), id.toLowerCase());
      assert.equal(cs.chargedCumulativeAmount, charged.toString());
      assert.equal(cs.balance, deposit.toString());
      last = p.voucher;
    }
    assert.equal((await storage.get(id)).chargedCumulativeAmount, charged.toString(), "the library's record follows the server's");
    assert.equal(await facilitatorCalls("verify"), verifies, "vouchers are verified without the facilitator");
    Object.assign(chan, { scheme, storage, offer, cfg, id, charged, balance: deposit, lastVoucher: last });
  });

  test("batch-settlement: a client that lost its channel record gets a corrective 402 and the library recovers", { timeout: 60_000 }, async () => {
    assert.ok(chan.id, "the channel test must pass first");
    // Same key and salt, empty storage: a restarted client. It reads the
    // channel on chain (balance, totalClaimed 0) and signs totalClaimed +
    // amount, behind the server's chargedCumulativeAmount.
    const storage = new InMemoryClientChannelStorage();
    const scheme = new BatchSettlementEvmScheme(chainSigner, { salt: chan.salt, storage });
    const reads = chainReads.length;
    const r = await payChannel(scheme);
    assert.equal(r.log.length, 3, `challenge, stale voucher, recovered voucher: ${wire(r.log)}`);
    const [, stale, fixed] = r.log;
    const sp = decodeB64JSON(stale.headers.get("payment-signature")).payload;
    assert.equal(sp.type, "voucher", "the balance read on chain covers a voucher");
    assert.equal(sp.voucher.maxClaimableAmount, CHANNEL_MAX, "cold start: totalClaimed (0) + amount");
    assert.equal(stale.status, 402, "the stale voucher is refused");
    const pr = decodeB64JSON(stale.responseHeaders.get("payment-required"));
    await checkCorrective(pr, chan);
    assert.equal(JSON.parse(stale.body).error, CUMULATIVE_MISMATCH, "the body's error is the same code");
    assert.ok(chainReads.slice(reads).includes(chan.id.toLowerCase()), "the library read the channel on chain");

    const fp = decodeB64JSON(fixed.headers.get("payment-signature")).payload;
    assert.equal(fp.type, "voucher");
    assert.equal(fp.voucher.maxClaimableAmount, (chan.charged + BigInt(CHANNEL_MAX)).toString(), "the retry signs the server's charged amount + amount");
    assert.equal(r.settle.transaction, "");
    assert.equal(r.settle.extra?.chargedAmount, CHANNEL_CHARGE);
    chan.charged += BigInt(CHANNEL_CHARGE);
    assert.equal(r.settle.extra.channelState.chargedCumulativeAmount, chan.charged.toString(), "the refused voucher charged nothing");
    const rec = await storage.get(chan.id);
    assert.equal(rec.chargedCumulativeAmount, chan.charged.toString(), "the recovered record follows the server's");
    chan.lastVoucher = fp.voucher;
    chan.restarted = { scheme, storage };
  });

  test("batch-settlement: a stale voucher from signVoucher gets a corrective 402; processCorrectivePaymentRequired resyncs and the next payload is served", { timeout: 60_000 }, async () => {
    assert.ok(chan.id, "the channel test must pass first");
    // The first client's record is now one charge behind: the other client
    // paid on the same channel.
    const { scheme, storage } = chan;
    const behind = await storage.get(chan.id);
    assert.equal(behind.chargedCumulativeAmount, (chan.charged - BigInt(CHANNEL_CHARGE)).toString());
    const http = new x402HTTPClient(new x402Client().register(NETWORK_V2, scheme));

    // What that client would sign: its record's charged amount + amount.
    const voucher = await signVoucher(chainSigner, chan.id, (BigInt(behind.chargedCumulativeAmount) + BigInt(CHANNEL_MAX)).toString(), NETWORK_V2);
    const stalePayment = { x402Version: 2, accepted: chan.offer, payload: { type: "voucher", channelConfig: chan.cfg, voucher } };
    const log = [];
    const send = channelFetch(log);
    const res = await send(baseURL + CHANNEL_PATH, { headers: http.encodePaymentSignatureHeader(stalePayment) });
    const body = await res.text();
    assert.equal(res.status, 402, `stale voucher: ${res.status} ${body}`);
    const pr = http.getPaymentRequiredResponse((n) => res.headers.get(n));
    await checkCorrective(pr, chan);

    // The library's recovery: it checks the server's voucherState against
    // its own key and the chain, then adopts chargedCumulativeAmount.
    assert.equal(await scheme.processCorrectivePaymentRequired(pr), true, "the library accepts the corrective state");
    const rec = await storage.get(chan.id);
    assert.equal(rec.chargedCumulativeAmount, chan.charged.toString());
    assert.equal(rec.signedMaxClaimable, chan.lastVoucher.maxClaimableAmount);

    // The next payload, built by the scheme for the route's plain
    // challenge, is served.
    const probe = await send(baseURL + CHANNEL_PATH);
    await probe.text();
    const challenge = http.getPaymentRequiredResponse((n) => probe.headers.get(n));
    const next = await new x402Client().register(NETWORK_V2, scheme).createPaymentPayload(challenge);
    assert.equal(next.payload.type, "voucher");
    assert.equal(next.payload.voucher.maxClaimableAmount, (chan.charged + BigInt(CHANNEL_MAX)).toString());
    const paid = await send(baseURL + CHANNEL_PATH, { headers: http.encodePaymentSignatureHeader(next) });
    const text = await paid.text();
    assert.equal(paid.status, 200, `recovered voucher: ${paid.status} ${text}`);
    checkRows(text, paid.headers.get("content-type"));
    const result = await http.processPaymentResult(next, (n) => paid.headers.get(n), paid.status);
    assert.equal(result.settleResponse?.success, true);
    chan.charged += BigInt(CHANNEL_CHARGE);
    assert.equal(result.settleResponse.extra.channelState.chargedCumulativeAmount, chan.charged.toString());
    assert.equal((await storage.get(chan.id)).chargedCumulativeAmount, chan.charged.toString(), "the library's hooks took the answer in");
    chan.lastVoucher = next.payload.voucher;
  });

  test("batch-settlement: the library's refund() gets part (after a corrective 402), then all of the remainder back without the worker", { timeout: 60_000 }, async () => {
    assert.ok(chan.id, "the channel test must pass first");
    const { scheme, storage } = chan;
    const url = baseURL + CHANNEL_PATH;

    // A partial refund, asked by the restarted client, whose record is a
    // charge behind (the first client paid since): its zero-charge voucher
    // (maxClaimableAmount = the charged amount it knows) gets a corrective
    // 402, the library resyncs and asks again.
    const restarted = chan.restarted;
    assert.ok(restarted, "the lost-record test must pass first");
    const behind = (await restarted.storage.get(chan.id)).chargedCumulativeAmount;
    assert.equal(behind, (chan.charged - BigInt(CHANNEL_CHARGE)).toString());
    let log = [];
    const partial = await restarted.scheme.refund(url, { amount: "1000", fetch: channelFetch(log) });
    assert.equal(log.length, 3, `probe, stale refund, refund: ${wire(log)}`);
    const [probe, staleRefund, refund] = log;
    assert.equal(probe.status, 402);
    assert.equal(probe.headers.get("payment-signature"), null, "the probe is unpaid");
    const sp = decodeB64JSON(staleRefund.headers.get("payment-signature")).payload;
    assert.equal(sp.type, "refund");
    assert.equal(sp.voucher.maxClaimableAmount, behind);
    assert.equal(staleRefund.status, 402);
    await checkCorrective(decodeB64JSON(staleRefund.responseHeaders.get("payment-required")), chan);
    const rp = decodeB64JSON(refund.headers.get("payment-signature")).payload;
    assert.equal(rp.type, "refund");
    assert.deepEqual(rp.channelConfig, chan.cfg);
    assert.equal(rp.voucher.maxClaimableAmount, chan.charged.toString(), "a zero-charge voucher: the server's charged amount");
    assert.equal(await voucherSignedBy(chan.id, rp.voucher.maxClaimableAmount, rp.voucher.signature), true);
    assert.equal(rp.amount, "1000");
    assert.equal(refund.status, 200);
    assert.doesNotThrow(() => JSON.parse(refund.body));
    assert.equal(JSON.parse(refund.body).rows, undefined, `the worker is not called: ${refund.body}`);
    assert.equal(partial.success, true, JSON.stringify(partial));
    assert.match(partial.transaction, /^0x[0-9a-f]{64}$/, "a refund is an onchain transaction");
    assert.equal(partial.amount, "1000");
    assert.equal(partial.extra?.chargedAmount, undefined, "a refund charges nothing");
    let cs = partial.extra.channelState;
    chan.balance -= 1000n;
    assert.equal(cs.channelId.toLowerCase(), chan.id.toLowerCase());
    assert.equal(cs.balance, chan.balance.toString());
    assert.equal(cs.totalClaimed, chan.charged.toString(), "what was charged is claimed with the refund");
    assert.equal((await restarted.storage.get(chan.id)).balance, chan.balance.toString(), "the library took the partial refund in");

    // More than the remainder: refused, nothing moves.
    const remainder = chan.balance - chan.charged;
    await assert.rejects(scheme.refund(url, { amount: (remainder + 1n).toString(), fetch: channelFetch([]) }),
      /invalid_batch_settlement_evm_refund_amount_invalid/);

    // The rest, asked by the first client (its charged amount is the
    // server's; the balance it knows predates the partial refund).
    log = [];
    const full = await scheme.refund(url, { fetch: channelFetch(log) });
    const fp = decodeB64JSON(log[log.length - 1].headers.get("payment-signature")).payload;
    assert.equal(fp.amount, undefined, "no amount: everything left");
    assert.equal(full.success, true, JSON.stringify(full));
    assert.match(full.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(full.amount, remainder.toString(), "the whole unclaimed remainder");
    cs = full.extra.channelState;
    chan.balance = chan.charged;
    assert.equal(cs.balance, chan.balance.toString(), "what stays in escrow is what was charged");
    assert.equal(cs.totalClaimed, chan.charged.toString());
    assert.equal(await storage.get(chan.id), undefined, "the library forgets a channel refunded in full");

    // The channel after: nothing left to refund, on the gateway's side...
    const http = new x402HTTPClient(new x402Client().register(NETWORK_V2, scheme));
    const voucher = await signVoucher(chainSigner, chan.id, chan.charged.toString(), NETWORK_V2);
    const again = { x402Version: 2, accepted: chan.offer, payload: { type: "refund", channelConfig: chan.cfg, voucher } };
    const res = await fetch(url, { headers: http.encodePaymentSignatureHeader(again) });
    await res.text();
    assert.equal(res.status, 402);
    assert.equal(http.getPaymentRequiredResponse((n) => res.headers.get(n)).error, "invalid_batch_settlement_evm_refund_no_balance");
    // ...and on the client's, from the chain.
    await assert.rejects(scheme.refund(url, { fetch: channelFetch([]) }), /no remaining balance/);
  });

  test("batch-settlement: after the refund the channel is funded again and keeps its charged amount", { timeout: 60_000 }, async () => {
    assert.ok(chan.id, "the channel test must pass first");
    const storage = new InMemoryClientChannelStorage();
    const scheme = new BatchSettlementEvmScheme(chainSigner, { salt: chan.salt, storage });
    const r = await payChannel(scheme);
    assert.equal(r.log.length, 2, `one challenge, one paid request: ${wire(r.log)}`);
    const pl = r.payment.payload;
    assert.equal(pl.type, "deposit", "the chain shows no room for a voucher: a top-up");
    assert.equal(pl.voucher.channelId, chan.id, "the same channel");
    assert.equal(pl.voucher.maxClaimableAmount, (chan.charged + BigInt(CHANNEL_MAX)).toString(), "continuing from the claimed total");
    assert.match(r.settle.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(r.settle.extra?.chargedAmount, CHANNEL_CHARGE);
    const cs = r.settle.extra.channelState;
    assert.equal(cs.chargedCumulativeAmount, (chan.charged + BigInt(CHANNEL_CHARGE)).toString());
    assert.equal(cs.balance, (chan.balance + BigInt(pl.deposit.amount)).toString());
  });
});
