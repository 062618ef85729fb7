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

import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
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
  const child = spawn(
    binary,
    ["-store", "memory", "-addr", addr, "-admin-token", ADMIN_TOKEN],
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

    // Both payments so far must be in the event log before we count.
    const expectSettled = (paid.v1 ? 1 : 0) + (paid.v2 ? 1 : 0);
    const before = await pollEvents((s) => s.settled >= expectSettled);
    assert.equal(before.settled, expectSettled, "one payment_settled per payment so far");

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
});
