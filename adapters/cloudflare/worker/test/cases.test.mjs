// Runs the shared table testdata/cases.json, which the Go tests run against
// the tenant and limits packages, against the JavaScript port in
// dispatch.js: both must give the same answers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadWorker, readTestdata } from "./load.mjs";

const w = await loadWorker();
const cases = readTestdata("cases.json");

// tenantView renders a parsed tenant in the shape the Go test writes.
function tenantView(t) {
  const usage = {};
  if (t.usageLimit.dailyRequests) usage.dailyRequests = t.usageLimit.dailyRequests;
  if (t.usageLimit.monthlyRequests) usage.monthlyRequests = t.usageLimit.monthlyRequests;
  return {
    slug: t.slug,
    workerName: t.workerName,
    plan: t.plan,
    hosts: t.hosts,
    priceUsd: t.priceUsd,
    x402Enabled: t.x402Enabled,
    usageLimit: usage,
    spendLimit: t.spendLimit,
    rateLimit: t.rateLimit,
    ownerUserId: t.ownerUserId,
    directory: t.directory,
    payTo: t.payTo,
    overrides: t.limits,
    limits: w.resolveLimits(t.plan, t.limits),
  };
}

function answer(c) {
  const out = { name: c.name, input: c.input };
  let dir;
  try {
    dir = w.parseDirectory(c.input);
  } catch (e) {
    assert.ok(e instanceof w.DirectoryError, `${c.name}: ${e.stack}`);
    out.valid = false;
    out.error = e.tenant === null ? {} : { tenant: e.tenant, field: e.field };
    if (c.resolve) out.resolve = c.resolve;
    return out;
  }
  out.valid = true;
  if (dir.tenants.length > 0) out.tenants = dir.tenants.map(tenantView);
  if (c.resolve) {
    out.resolve = c.resolve.map((r) => {
      const res = w.resolveTenant(dir, r.host, r.path);
      const want = res.error ? { error: res.error } : { tenant: res.tenant.slug, path: res.path };
      if (res.byHost) want.byHost = true;
      return { host: r.host, path: r.path, want };
    });
  }
  return out;
}

test("the shared table has cases", () => {
  assert.ok(cases.directories.length > 50);
  assert.ok(cases.limits.length > 10);
});

for (const c of cases.directories) {
  test(`directory: ${c.name}`, () => {
    assert.deepEqual(answer(c), c);
  });
}

test("limits: plans, overrides, allowRaise", () => {
  for (const lc of cases.limits) {
    const got = w.resolveLimits(lc.plan, lc.overrides, { allowRaise: lc.allowRaise });
    assert.deepEqual(got, lc.want, JSON.stringify(lc));
  }
});

test("signature vectors agree with Go", async () => {
  const v = readTestdata("signature_vectors.json");
  assert.ok(v.vectors.length >= 2);
  for (const x of v.vectors) {
    assert.equal(w.signatureBase(x.values), x.base);
    assert.equal(await w.sign(x.secret, x.values), x.signature);
  }
});

test("classifyError maps the namespace's exceptions", () => {
  assert.equal(w.classifyError(new Error("Worker not found.")), "worker_not_found");
  assert.equal(w.classifyError(new Error("Worker exceeded CPU time limit.")), "worker_limit_exceeded");
  assert.equal(w.classifyError(new Error("Too many subrequests.")), "worker_limit_exceeded");
  assert.equal(w.classifyError(new Error("Worker exceeded resource limits")), "worker_limit_exceeded");
  assert.equal(w.classifyError(new Error("boom")), "tenant_worker_failure");
  assert.equal(w.classifyError("plain string"), "tenant_worker_failure");
  assert.equal(w.classifyError(undefined), "tenant_worker_failure");
});
