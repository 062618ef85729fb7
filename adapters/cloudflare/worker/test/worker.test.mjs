// Runs dispatch.js in workerd (through miniflare) against an emulated
// dispatch namespace (fixtures/namespace.mjs, a wrapped binding) whose user
// workers (fixtures/user-worker.mjs) echo what they received.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Miniflare } from "miniflare";
import { loadWorker, workerSource } from "./load.mjs";

const here = path.dirname(new URL(import.meta.url).pathname);
const namespaceSource = readFileSync(path.join(here, "fixtures", "namespace.mjs"), "utf8");
const userSource = readFileSync(path.join(here, "fixtures", "user-worker.mjs"), "utf8");
const w = await loadWorker();

const SECRET = "test-secret-0123456789abcdef";
const COMPAT = "2025-09-01";

// The directory: three tenants whose workers exist, one whose worker does not.
const DIRECTORY = JSON.stringify({
  tenants: [
    { slug: "acme", workerName: "tenant-acme-worker", plan: "pro", hosts: ["acme.api.402claw.dev"] },
    { slug: "bob", workerName: "tenant-bob-worker", plan: "free" },
    { slug: "big", workerName: "tenant-big-worker", plan: "Enterprise", limits: { cpuMs: 400, subRequests: "9999" } },
    { slug: "ghost", workerName: "tenant-ghost-worker", plan: "business" },
  ],
});

const USER_WORKERS = ["tenant-acme-worker", "tenant-bob-worker", "tenant-big-worker"];

function options(bindings) {
  const routes = {};
  const serviceBindings = {};
  USER_WORKERS.forEach((name, i) => {
    routes[name] = `USER_${i}`;
    serviceBindings[`USER_${i}`] = name;
  });
  return {
    workers: [
      {
        name: "dispatcher",
        modules: [{ type: "ESModule", path: "dispatch.js", contents: workerSource }],
        compatibilityDate: COMPAT,
        bindings,
        wrappedBindings: { DISPATCHER: { scriptName: "namespace-shim" } },
      },
      {
        name: "namespace-shim",
        modules: [{ type: "ESModule", path: "namespace.mjs", contents: namespaceSource }],
        // No compatibility date: a wrapped binding runs under the one of the
        // worker that binds it.
        bindings: { ROUTES: JSON.stringify(routes) },
        serviceBindings,
      },
      ...USER_WORKERS.map((name) => ({
        name,
        modules: [{ type: "ESModule", path: "user-worker.mjs", contents: userSource }],
        compatibilityDate: COMPAT,
        bindings: { WORKER_NAME: name },
      })),
    ],
  };
}

let edge, gateway, broken;
before(async () => {
  edge = new Miniflare(options({ TENANT_DIRECTORY_JSON: DIRECTORY, DISPATCH_MODE: "edge" }));
  gateway = new Miniflare(options({ DISPATCH_SECRET: SECRET }));
  broken = new Miniflare(options({ TENANT_DIRECTORY_JSON: '{"tenants":[{"slug":"Bad","workerName":"w"}]}' }));
  await Promise.all([edge.ready, gateway.ready, broken.ready]);
});
after(async () => {
  await Promise.all([edge?.dispose(), gateway?.dispose(), broken?.dispose()]);
});

async function json(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    assert.fail(`not JSON (${res.status}): ${text}`);
  }
}

async function assertError(res, status, code, tenant) {
  const body = await json(res);
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.headers.get("x-dispatch-error"), code);
  assert.equal(body.ok, false);
  assert.equal(body.error, code);
  assert.equal(typeof body.message, "string");
  assert.ok(body.message.length > 0);
  assert.equal(body.requestId, res.headers.get("x-request-id"));
  assert.match(body.requestId, /^[0-9a-f-]{36}$/);
  assert.equal(res.headers.get("x-tenant-id"), tenant ?? null);
  return body;
}

// ---- edge mode ------------------------------------------------------------

test("edge: /t/<slug>/ routes to the tenant's worker, prefix stripped, plan limits", async () => {
  const res = await edge.dispatchFetch("https://gw.example/t/acme/v1/items?x=1", { headers: { "x-dispatch-worker": "spoofed" } });
  const body = await json(res);
  assert.equal(res.status, 200);
  assert.equal(body.worker, "tenant-acme-worker");
  assert.deepEqual(body.limits, { cpuMs: 200, subRequests: 50 });
  assert.deepEqual(body.args, {});
  assert.equal(body.path, "/v1/items");
  assert.equal(body.search, "?x=1");
  assert.equal(body.headers["x-tenant-id"], "acme");
  assert.equal(body.headers["x-dispatch-worker"], undefined, "client X-Dispatch-* headers are stripped");
  assert.equal(res.headers.get("x-tenant-id"), "acme");
  assert.equal(res.headers.get("x-request-id"), body.headers["x-request-id"]);
  assert.match(res.headers.get("x-request-id"), /^[0-9a-f]{8}-/);
});

test("edge: host match first (upper case, port), path kept", async () => {
  const res = await edge.dispatchFetch("https://ACME.api.402claw.dev:8443/t/bob/x");
  const body = await json(res);
  assert.equal(res.status, 200);
  assert.equal(body.worker, "tenant-acme-worker");
  assert.equal(body.path, "/t/bob/x");
});

test("edge: limits per plan, overrides only lower", async () => {
  const free = await json(await edge.dispatchFetch("https://gw.example/t/bob/"));
  assert.deepEqual(free.limits, { cpuMs: 50, subRequests: 10 });
  const big = await json(await edge.dispatchFetch("https://gw.example/t/big"));
  assert.deepEqual(big.limits, { cpuMs: 400, subRequests: 250 });
  assert.equal(big.path, "/");
});

test("edge: POST body, method and a valid incoming request id are kept", async () => {
  const rid = "6F1C1B0E-3A53-4A4E-9F8E-0D6C1F0B9A11";
  const res = await edge.dispatchFetch("https://gw.example/t/acme/echo", { method: "POST", body: "hello", headers: { "x-request-id": rid } });
  const body = await json(res);
  assert.equal(body.method, "POST");
  assert.equal(body.body, "hello");
  assert.equal(res.headers.get("x-request-id"), rid.toLowerCase());
  const other = await edge.dispatchFetch("https://gw.example/t/acme/", { headers: { "x-request-id": "not-a-uuid" } });
  assert.notEqual(other.headers.get("x-request-id"), "not-a-uuid");
  await other.text();
});

test("edge: tenant not found", async () => {
  await assertError(await edge.dispatchFetch("https://gw.example/t/nobody/x"), 404, "tenant_not_found");
  await assertError(await edge.dispatchFetch("https://gw.example/"), 404, "tenant_not_found");
});

test("edge: bad slug and percent-encoded dot segments are bad requests", async () => {
  await assertError(await edge.dispatchFetch("https://gw.example/t/Bob/x"), 400, "bad_request");
  await assertError(await edge.dispatchFetch("https://gw.example/t/-bob/x"), 400, "bad_request");
  await assertError(await edge.dispatchFetch("https://gw.example/t/bob%2Fx/y"), 400, "bad_request");
  // Dot segments, literal or "%2e%2E", never reach the worker: the URL
  // parser of the Workers runtime resolves them first, so the request is
  // for the tenant the resolved path names (the Go gateway answers 400
  // instead; resolveTenant itself refuses them, see cases.test.mjs).
  const res = await edge.dispatchFetch("https://gw.example/t/bob/%2e%2E/acme/x");
  const body = await json(res);
  assert.equal(res.headers.get("x-tenant-id"), "acme");
  assert.equal(body.path, "/x");
});

test("edge: worker missing from the namespace is 404 worker_not_found", async () => {
  const body = await assertError(await edge.dispatchFetch("https://gw.example/t/ghost/x"), 404, "worker_not_found", "ghost");
  assert.match(body.message, /tenant-ghost-worker/);
});

test("edge: CPU over the plan's limit is 503 worker_limit_exceeded", async () => {
  await assertError(await edge.dispatchFetch("https://gw.example/t/bob/?cpu=51"), 503, "worker_limit_exceeded", "bob");
  const ok = await edge.dispatchFetch("https://gw.example/t/bob/?cpu=50");
  assert.equal(ok.status, 200);
  await ok.text();
  const pro = await edge.dispatchFetch("https://gw.example/t/acme/?cpu=150");
  assert.equal(pro.status, 200);
  await pro.text();
});

test("edge: subrequests over the plan's limit is 503 worker_limit_exceeded", async () => {
  await assertError(await edge.dispatchFetch("https://gw.example/t/bob/?subrequests=11"), 503, "worker_limit_exceeded", "bob");
  const pro = await edge.dispatchFetch("https://gw.example/t/acme/?subrequests=11");
  assert.equal(pro.status, 200);
  await pro.text();
});

test("edge: any other failure is 502 tenant_worker_failure", async () => {
  await assertError(await edge.dispatchFetch("https://gw.example/t/bob/?throw=boom"), 502, "tenant_worker_failure", "bob");
  await assertError(await edge.dispatchFetch("https://gw.example/t/bob/?crash=inside"), 502, "tenant_worker_failure", "bob");
});

test("edge: the tenant worker's own error answers pass through unmarked", async () => {
  const res = await edge.dispatchFetch("https://gw.example/t/bob/?status=404&spoof=1");
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("x-dispatch-error"), null, "a tenant cannot fake a dispatch error");
  assert.equal(res.headers.get("x-tenant-id"), "bob");
  await res.text();
});

test("edge: platform health", async () => {
  const res = await edge.dispatchFetch("https://gw.example/__platform/health");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
});

test("edge: an invalid directory answers 500 invalid_directory", async () => {
  await assertError(await broken.dispatchFetch("https://gw.example/t/bad/"), 500, "invalid_directory");
});

test("edge: the shared resolve cases agree in the worker too", async () => {
  // Paths the URL parser leaves as they are, so the worker sees what the
  // table says; each case goes through workerd end to end.
  const cases = [
    ["gw.example", "/t/acme/x/y", { tenant: "acme", path: "/x/y" }],
    ["gw.example", "/t/acme", { tenant: "acme", path: "/" }],
    ["gw.example", "/t/bob/a%2Fb", { error: "bad_request" }],
    ["gw.example", "/t/bob/a%5Cb", { error: "bad_request" }],
    ["gw.example", "/t/bob/a%20b", { tenant: "bob", path: "/a%20b" }],
    ["ACME.API.402CLAW.DEV", "/t/bob/z", { tenant: "acme", path: "/t/bob/z" }],
    ["gw.example", "/t/", { error: "bad_request" }],
    ["gw.example", "/t//x", { error: "bad_request" }],
    ["gw.example", "/T/acme/x", { error: "tenant_not_found" }],
  ];
  for (const [host, p, want] of cases) {
    const res = await edge.dispatchFetch(`https://${host}${p}`);
    const body = await json(res);
    if (want.error) {
      assert.equal(body.error, want.error, `${host}${p}`);
    } else {
      assert.equal(res.headers.get("x-tenant-id"), want.tenant, `${host}${p}`);
      assert.equal(body.path, want.path, `${host}${p}`);
    }
  }
});

// ---- gateway mode -----------------------------------------------------------

function signedValues(over = {}) {
  return {
    timestamp: String(Math.floor(Date.now() / 1000)),
    requestId: "6f1c1b0e-3a53-4a4e-9f8e-0d6c1f0b9a11",
    tenant: "acme",
    worker: "tenant-acme-worker",
    plan: "pro",
    cpuMs: "200",
    subRequests: "50",
    method: "GET",
    host: "acme.api.402claw.dev",
    path: "/v1/items?x=1",
    ...over,
  };
}

async function signedHeaders(values, secret = SECRET) {
  return {
    "x-request-id": values.requestId,
    "x-dispatch-timestamp": values.timestamp,
    "x-dispatch-tenant": values.tenant,
    "x-dispatch-worker": values.worker,
    "x-dispatch-plan": values.plan,
    "x-dispatch-cpu-ms": values.cpuMs,
    "x-dispatch-subrequests": values.subRequests,
    "x-dispatch-host": values.host,
    "x-dispatch-path": values.path,
    "x-dispatch-signature": await w.sign(secret, values),
  };
}

test("gateway: a signed request reaches the named worker with the signed limits", async () => {
  const v = signedValues();
  const res = await gateway.dispatchFetch("https://dispatch.example/ignored", { headers: { ...(await signedHeaders(v)), "x-custom": "kept" } });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.worker, "tenant-acme-worker");
  assert.deepEqual(body.limits, { cpuMs: 200, subRequests: 50 });
  assert.equal(body.url, "https://acme.api.402claw.dev/v1/items?x=1");
  assert.equal(body.headers["x-custom"], "kept");
  assert.equal(body.headers["x-request-id"], v.requestId);
  assert.equal(body.headers["x-tenant-id"], "acme");
  for (const k of Object.keys(body.headers)) assert.ok(!k.startsWith("x-dispatch-"), k);
  assert.equal(res.headers.get("x-request-id"), v.requestId);
});

test("gateway: POST with a body", async () => {
  const v = signedValues({ method: "POST", worker: "tenant-bob-worker", tenant: "bob", plan: "free", cpuMs: "50", subRequests: "10", path: "/p" });
  const res = await gateway.dispatchFetch("https://dispatch.example/p", { method: "POST", body: "payload", headers: await signedHeaders(v) });
  const body = await json(res);
  assert.equal(body.body, "payload");
  assert.deepEqual(body.limits, { cpuMs: 50, subRequests: 10 });
});

test("gateway: unsigned requests are 401", async () => {
  await assertError(await gateway.dispatchFetch("https://dispatch.example/t/acme/x"), 401, "unauthorized");
});

test("gateway: altered requests are 401", async () => {
  const v = signedValues();
  const good = await signedHeaders(v);
  for (const [k, val] of [
    ["x-dispatch-worker", "tenant-bob-worker"],
    ["x-dispatch-cpu-ms", "600"],
    ["x-dispatch-subrequests", "250"],
    ["x-dispatch-path", "/admin"],
    ["x-dispatch-host", "evil.example"],
    ["x-request-id", "7f1c1b0e-3a53-4a4e-9f8e-0d6c1f0b9a11"],
    ["x-dispatch-signature", good["x-dispatch-signature"].replace(/.$/, (c) => (c === "0" ? "1" : "0"))],
  ]) {
    const res = await gateway.dispatchFetch("https://dispatch.example/", { headers: { ...good, [k]: val } });
    await assertError(res, 401, "unauthorized");
  }
  const res = await gateway.dispatchFetch("https://dispatch.example/", { method: "DELETE", headers: good });
  await assertError(res, 401, "unauthorized");
});

test("gateway: a wrong secret is 401", async () => {
  const v = signedValues();
  await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(v, "some-other-secret-000000") }), 401, "unauthorized");
});

test("gateway: stale and future timestamps are 401", async () => {
  const now = Math.floor(Date.now() / 1000);
  for (const ts of [now - 400, now + 400]) {
    const v = signedValues({ timestamp: String(ts) });
    const body = await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(v) }), 401, "unauthorized");
    assert.match(body.message, /stale/);
  }
  const fresh = signedValues({ timestamp: String(now - 200) });
  const res = await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(fresh) });
  assert.equal(res.status, 200);
  await res.text();
});

test("gateway: error mapping for not found, limits and failures", async () => {
  const ghost = signedValues({ worker: "tenant-ghost-worker", tenant: "ghost" });
  await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(ghost) }), 404, "worker_not_found", "ghost");
  const hog = signedValues({ worker: "tenant-bob-worker", tenant: "bob", cpuMs: "50", subRequests: "10", path: "/?subrequests=11" });
  await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(hog) }), 503, "worker_limit_exceeded", "bob");
  const cpu = signedValues({ worker: "tenant-bob-worker", tenant: "bob", cpuMs: "50", subRequests: "10", path: "/?cpu=99" });
  await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(cpu) }), 503, "worker_limit_exceeded", "bob");
  const crash = signedValues({ path: "/?crash=x" });
  await assertError(await gateway.dispatchFetch("https://dispatch.example/", { headers: await signedHeaders(crash) }), 502, "tenant_worker_failure", "acme");
});

test("gateway: the directory is not consulted (tenant-only unsigned paths refused)", async () => {
  await assertError(await gateway.dispatchFetch("https://acme.api.402claw.dev/hello"), 401, "unauthorized");
});
