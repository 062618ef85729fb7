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
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { privateKeyToAccount } from "viem/accounts";
import { verifyTypedData } from "viem";
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
});
