// dispatch.js: the 402claw dispatch worker for Cloudflare Workers for Platforms.
//
// One ES module, no imports. It is embedded in the Go package
// github.com/402claw/dispatcher/adapters/cloudflare and uploaded by its
// deploy client; its behaviour is part of the project's wire contract.
//
// Bindings and variables:
//   DISPATCHER             dispatch namespace binding (required)
//   TENANT_DIRECTORY_JSON  tenant directory, either JSON form (edge mode)
//   DISPATCH_SECRET        shared HMAC-SHA256 secret (gateway mode)
//   DISPATCH_MODE          "edge", "gateway" or "both"; unset: "gateway" when
//                          DISPATCH_SECRET is set, else "edge"
//   DISPATCH_MAX_SKEW_SECONDS  accepted clock skew of signed requests (300)
//   DISPATCH_ALLOW_LIMIT_RAISE "true" lets tenant overrides raise plan limits
//
// Edge mode resolves the tenant from the directory exactly as the Go
// tenant package does (host first, then /t/<slug>/), works out the limits
// exactly as the Go limits package does, strips the prefix and calls
//   env.DISPATCHER.get(workerName, {}, {limits: {cpuMs, subRequests}}).fetch(req)
//
// Gateway mode trusts the Go gateway: it resolved and charged, and signed
// the routing decision (worker, limits, request id, timestamp, method, host,
// path) with HMAC-SHA256. Unsigned, altered or stale requests get 401.
//
// Errors are JSON {"ok":false,"error":code,"message":text,"requestId":id}
// with X-Request-Id, X-Tenant-Id when known, and X-Dispatch-Error: code so
// that the Go fetcher can tell them from a tenant worker's own answers.

// ---------------------------------------------------------------------------
// Plans and limits (mirror of the Go limits package).

const DEFAULT_PLANS = Object.freeze({
  free: Object.freeze({ cpuMs: 50, subRequests: 10 }),
  pro: Object.freeze({ cpuMs: 200, subRequests: 50 }),
  business: Object.freeze({ cpuMs: 350, subRequests: 100 }),
  enterprise: Object.freeze({ cpuMs: 600, subRequests: 250 }),
  quarantine: Object.freeze({ cpuMs: 25, subRequests: 3 }),
});

const MAX_INT32 = 2147483647;

// goTrimSpace trims what Go's strings.TrimSpace trims (Unicode White_Space),
// which is not exactly what String.prototype.trim trims.
const GO_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
  0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
function goTrimSpace(s) {
  let a = 0;
  let b = s.length;
  while (a < b && GO_SPACE.has(s.charCodeAt(a))) a++;
  while (b > a && GO_SPACE.has(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

// planKey lower-cases like Go's strings.ToLower as far as the result can be
// an ASCII plan name (including U+0130 -> i and the Kelvin sign -> k).
function planKey(name) {
  let out = "";
  for (const ch of goTrimSpace(String(name ?? ""))) {
    const c = ch.codePointAt(0);
    if (c >= 0x41 && c <= 0x5a) out += String.fromCharCode(c + 32);
    else if (c === 0x130) out += "i";
    else if (c === 0x212a) out += "k";
    else out += ch;
  }
  return out;
}

function normalizePlan(name, policy = {}) {
  const plans = policy.plans || DEFAULT_PLANS;
  const k = planKey(name);
  return Object.prototype.hasOwnProperty.call(plans, k) ? k : "free";
}

function planLimits(name, policy = {}) {
  const plans = policy.plans || DEFAULT_PLANS;
  const k = planKey(name);
  return Object.prototype.hasOwnProperty.call(plans, k) ? plans[k] : plans.free;
}

function pick(plan, override, allowRaise) {
  if (!(override > 0)) return plan;
  if (override > plan && !allowRaise) return plan;
  return override;
}

// resolveLimits is limits.Policy.Resolve: overrides lower a limit, raise it
// only when policy.allowRaise, and non-positive overrides mean "the plan".
function resolveLimits(plan, overrides = {}, policy = {}) {
  const base = planLimits(plan, policy);
  return {
    cpuMs: pick(base.cpuMs, overrides.cpuMs || 0, !!policy.allowRaise),
    subRequests: pick(base.subRequests, overrides.subRequests || 0, !!policy.allowRaise),
  };
}

// ---------------------------------------------------------------------------
// A JSON reader that keeps what Go's encoding/json sees and JSON.parse
// loses: number literals as text, and every key of an object in order.

class JSONSyntaxError extends Error {}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function readJSON(text) {
  let i = 0;
  const n = text.length;
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const fail = (what) => {
    throw new JSONSyntaxError(`${what} at offset ${i}`);
  };
  const value = (depth) => {
    if (depth > 10000) fail("nesting too deep");
    ws();
    if (i >= n) fail("unexpected end of JSON input");
    const c = text[i];
    if (c === "{") {
      i++;
      const entries = [];
      ws();
      if (text[i] === "}") {
        i++;
        return { t: "obj", entries };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a string key");
        const k = str();
        ws();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        entries.push([k, value(depth + 1)]);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return { t: "obj", entries };
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const items = [];
      ws();
      if (text[i] === "]") {
        i++;
        return { t: "arr", items };
      }
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return { t: "arr", items };
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return { t: "str", v: str() };
    if (text.startsWith("true", i)) {
      i += 4;
      return { t: "bool", v: true };
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return { t: "bool", v: false };
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return { t: "null" };
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail("invalid character");
    i += m[0].length;
    return { t: "num", raw: m[0] };
  };
  const str = () => {
    i++; // opening quote
    let out = "";
    for (;;) {
      if (i >= n) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return out;
      }
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        const e = text[i + 1];
        i += 2;
        switch (e) {
          case '"': out += '"'; break;
          case "\\": out += "\\"; break;
          case "/": out += "/"; break;
          case "b": out += "\b"; break;
          case "f": out += "\f"; break;
          case "n": out += "\n"; break;
          case "r": out += "\r"; break;
          case "t": out += "\t"; break;
          case "u": {
            const h = text.slice(i, i + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(h)) fail("bad \\u escape");
            out += String.fromCharCode(parseInt(h, 16));
            i += 4;
            break;
          }
          default:
            fail("bad escape");
        }
        continue;
      }
      out += text[i];
      i++;
    }
  };
  const v = value(0);
  ws();
  // Like Go's ParseDirectory: nothing but white space may follow.
  if (i < n) fail("trailing data after the directory object");
  return v;
}

// ---------------------------------------------------------------------------
// Go encoding/json field matching: an exact key, else a case-insensitive
// one; the last matching key wins, objects merge into objects.

function foldKey(k) {
  let out = "";
  for (const ch of k) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out += c >= 0x61 && c <= 0x7a ? String.fromCharCode(c - 32) : ch;
    else {
      const f = ch.toLowerCase().toUpperCase();
      out += [...f].length === 1 ? f : ch;
    }
  }
  return out;
}

class GoTypeError extends Error {}

// decodeStruct decodes an object node into a plain object along a schema:
// {field: kind}, kind one of "str", "bool", "raw", "strs", "rawmap", or a
// nested schema object (a pointer to a struct: null unsets it). The result
// holds only the fields present (undefined = Go's nil).
function decodeStruct(node, schema, into) {
  if (node.t === "null") return into || {};
  if (node.t !== "obj") throw new GoTypeError(`cannot unmarshal ${node.t} into an object`);
  const out = into || {};
  const exact = new Map();
  const folded = new Map();
  for (const f of Object.keys(schema)) {
    exact.set(f, f);
    if (!folded.has(foldKey(f))) folded.set(foldKey(f), f);
  }
  for (const [k, v] of node.entries) {
    const f = exact.get(k) ?? folded.get(foldKey(k));
    if (f === undefined) continue;
    out[f] = decodeField(v, schema[f], out[f]);
  }
  return out;
}

function decodeField(v, kind, prev) {
  if (typeof kind === "object") {
    if (v.t === "null") return undefined;
    return decodeStruct(v, kind, prev);
  }
  switch (kind) {
    case "str":
      if (v.t === "null") return undefined;
      if (v.t !== "str") throw new GoTypeError(`cannot unmarshal ${v.t} into a string`);
      return v.v;
    case "bool":
      if (v.t === "null") return undefined;
      if (v.t !== "bool") throw new GoTypeError(`cannot unmarshal ${v.t} into a bool`);
      return v.v;
    case "raw":
      return v;
    case "strs": {
      if (v.t === "null") return undefined;
      if (v.t !== "arr") throw new GoTypeError(`cannot unmarshal ${v.t} into a string array`);
      return v.items.map((it) => {
        if (it.t === "null") return "";
        if (it.t !== "str") throw new GoTypeError(`cannot unmarshal ${it.t} into a string`);
        return it.v;
      });
    }
    case "rawmap": {
      if (v.t === "null") return undefined;
      if (v.t !== "obj") throw new GoTypeError(`cannot unmarshal ${v.t} into an object`);
      const m = prev || new Map();
      for (const [k, x] of v.entries) m.set(k, x);
      return m;
    }
    case "rawobj": {
      // map[string]json.RawMessage at the top level of a directory.
      if (v.t === "null") return undefined;
      if (v.t !== "obj") throw new GoTypeError(`cannot unmarshal ${v.t} into an object`);
      const m = prev || new Map();
      for (const [k, x] of v.entries) m.set(k, x);
      return m;
    }
    case "rawarr":
      if (v.t === "null") return undefined;
      if (v.t !== "arr") throw new GoTypeError(`cannot unmarshal ${v.t} into an array`);
      return v.items.slice();
    default:
      throw new Error("unknown kind " + kind);
  }
}

const RATE_SCHEMA = { requests: "raw", windowSeconds: "raw" };
const TENANT_SCHEMA = {
  slug: "str",
  workerName: "str",
  plan: "str",
  hosts: "strs",
  host: "str",
  priceUsd: "raw",
  x402Enabled: "bool",
  usageLimit: { dailyRequests: "raw", monthlyRequests: "raw" },
  spendLimit: { dailySpendUsd: "raw", monthlySpendUsd: "raw" },
  limits: "rawmap",
  rateLimit: { perCaller: RATE_SCHEMA, global: RATE_SCHEMA },
  ownerUserId: "str",
  owner: "str",
  directory: "str",
  payTo: "str",
};
const DIRECTORY_SCHEMA = { byHost: "rawobj", bySlug: "rawobj", tenants: "rawarr" };

// ---------------------------------------------------------------------------
// Tenant directory (mirror of the Go tenant package).

const MAX_PRICE_DECIMALS = 6;
const MAX_DIRECTORY_SIZE = 64 << 20;

class DirectoryError extends Error {
  constructor(tenant, field, reason) {
    super(
      field
        ? `tenant directory: tenant ${JSON.stringify(tenant)}: field ${JSON.stringify(field)}: ${reason}`
        : tenant === null
          ? `tenant directory: ${reason}`
          : `tenant directory: tenant ${JSON.stringify(tenant)}: ${reason}`,
    );
    this.name = "DirectoryError";
    this.tenant = tenant;
    this.field = field;
    this.reason = reason;
  }
}

function validSlug(s) {
  if (typeof s !== "string" || s.length === 0 || s.length > 63) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39)) continue;
    if (c === 0x2d && i > 0) continue;
    return false;
  }
  return true;
}

function utf8Len(s) {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

function allDigits(s) {
  return s.length > 0 && s.length <= 5 && /^[0-9]+$/.test(s);
}

// normalizeHost is tenant.NormalizeHost: lower-case, port and trailing dot
// stripped; null for a host that is empty, too long or malformed.
function normalizeHost(host) {
  if (typeof host !== "string" || host === "" || utf8Len(host) > 255) return null;
  if (host[0] === "[") {
    const end = host.indexOf("]");
    if (end < 0) return null;
    const rest = host.slice(end + 1);
    if (rest !== "" && (rest[0] !== ":" || !allDigits(rest.slice(1)))) return null;
    host = host.slice(0, end + 1);
  } else {
    const i = host.lastIndexOf(":");
    if (i >= 0) {
      if (host.slice(0, i).indexOf(":") >= 0 || !allDigits(host.slice(i + 1))) return null;
      host = host.slice(0, i);
    }
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  if (host === "") return null;
  let out = "";
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f) {
      out += host[i];
    } else if (c >= 0x41 && c <= 0x5a) {
      out += String.fromCharCode(c + 32);
    } else if (c === 0x5b || c === 0x5d || c === 0x3a) {
      if (host[0] !== "[") return null;
      out += host[i];
    } else {
      return null;
    }
  }
  return out;
}

// scalarText is the Go helper: the text of a JSON number or string (trimmed),
// ok false for absent, null or an empty string; throws for other values.
function scalarText(node) {
  if (node === undefined || node.t === "null") return { ok: false };
  if (node.t === "str") {
    const s = goTrimSpace(node.v);
    return s === "" ? { ok: false } : { ok: true, text: s };
  }
  if (node.t === "num") return { ok: true, text: node.raw };
  throw new Error(`must be a number or a numeric string, got ${node.t}`);
}

// parseGoFloat is strconv.ParseFloat(s, 64): {ok, value}.
function parseGoFloat(s) {
  let m = /^([+-]?)(inf|infinity)$/i.exec(s);
  if (m) return { ok: true, value: m[1] === "-" ? -Infinity : Infinity };
  if (/^nan$/i.test(s)) return { ok: true, value: NaN };
  if (/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(s)) {
    const v = Number(s);
    if (!Number.isFinite(v)) return { ok: false }; // out of range
    return { ok: true, value: v };
  }
  m = /^([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?[pP]([+-]?[0-9]+)$/.exec(s);
  if (m && (m[2] + (m[3] || "")).length > 0) {
    const digits = m[2] + (m[3] || "");
    let mant = 0;
    for (const d of digits) mant = mant * 16 + parseInt(d, 16);
    const v = mant * Math.pow(2, Number(m[4]) - 4 * (m[3] || "").length);
    if (!Number.isFinite(v)) return { ok: false };
    return { ok: true, value: m[1] === "-" ? -v : v };
  }
  return { ok: false };
}

// parseDecimal is shopspring/decimal.NewFromString: {neg, digits, exp}.
function parseDecimal(text) {
  let value = text.replaceAll("\u2212", "-");
  let exp = 0;
  const eIndex = value.search(/[eE]/);
  if (eIndex >= 0) {
    if (value.slice(eIndex + 1).search(/[eE]/) >= 0) return null;
    const es = value.slice(eIndex + 1);
    if (!/^[+-]?[0-9]+$/.test(es)) return null;
    const e = Number(es);
    if (e < -2147483648 || e > 2147483647) return null;
    exp = e;
    value = value.slice(0, eIndex);
  }
  const p = value.indexOf(".");
  if (p >= 0 && value.indexOf(".", p + 1) >= 0) return null;
  if (p >= 0 && (value[p + 1] === "-" || value[p + 1] === "+")) return null;
  let neg = false;
  let body = value;
  if (p !== 0 && (body[0] === "+" || body[0] === "-")) {
    neg = body[0] === "-";
    body = body.slice(1);
  }
  const frac = p >= 0 ? value.length - p - 1 : 0;
  const digits = body.replace(".", "");
  if (!/^[0-9]+$/.test(digits)) return null;
  exp -= frac;
  if (exp < -10000 || exp > 10000) return null;
  return { neg, digits, exp };
}

// canonicalDecimal formats a parsed decimal like decimal.Decimal.String.
function canonicalDecimal(d) {
  let digits = d.digits.replace(/^0+/, "");
  if (digits === "") return "0";
  let exp = d.exp;
  while (digits.endsWith("0") && exp < 0) {
    digits = digits.slice(0, -1);
    exp++;
  }
  let s;
  if (exp >= 0) s = digits + "0".repeat(exp);
  else if (-exp >= digits.length) s = "0." + "0".repeat(-exp - digits.length) + digits;
  else s = digits.slice(0, digits.length + exp) + "." + digits.slice(digits.length + exp);
  return (d.neg ? "-" : "") + s;
}

// parseMoney: an exact, non-negative USD amount with at most six decimals,
// at most 10^12. Returns the canonical decimal string ("0" when absent).
function parseMoney(node) {
  const { ok, text } = scalarText(node);
  if (!ok) return "0";
  if (utf8Len(text) > 40) throw new Error("is too long to be a price");
  const d = parseDecimal(text);
  if (!d) throw new Error(`${JSON.stringify(text)} is not a decimal number`);
  const digits = d.digits.replace(/^0+/, "");
  if (digits === "") return "0";
  if (d.neg) throw new Error(`${text} is negative`);
  const tz = digits.length - digits.replace(/0+$/, "").length;
  if (d.exp + tz < -MAX_PRICE_DECIMALS) throw new Error(`${text} has more than ${MAX_PRICE_DECIMALS} decimal places`);
  const magnitude = digits.length + d.exp - 1;
  if (magnitude > 12 || (magnitude === 12 && !/^10*$/.test(digits))) throw new Error(`${text} is larger than 10^12 USD`);
  return canonicalDecimal({ neg: false, digits, exp: d.exp });
}

function parseCount(node) {
  const { ok, text } = scalarText(node);
  if (!ok) return 0;
  const f = parseGoFloat(text);
  if (!f.ok || Number.isNaN(f.value) || !Number.isFinite(f.value)) throw new Error(`${JSON.stringify(text)} is not a number`);
  if (f.value < 0) throw new Error(`${text} is negative`);
  if (f.value > 1e15) throw new Error(`${text} is too large`);
  return Math.floor(f.value) + 0; // + 0 turns -0 into 0
}

function parseRate(r) {
  if (r === undefined) return { requests: 0, windowSeconds: 0 };
  let req, win;
  try {
    req = parseCount(r.requests);
  } catch (e) {
    throw new Error("requests: " + e.message);
  }
  try {
    win = parseCount(r.windowSeconds);
  } catch (e) {
    throw new Error("windowSeconds: " + e.message);
  }
  if ((req === 0) !== (win === 0)) throw new Error("requests and windowSeconds must both be positive");
  if (win > 366 * 24 * 3600) throw new Error("windowSeconds is longer than a year");
  return { requests: req, windowSeconds: win };
}

// lenientInt reads the first present key as a limit override: a number or a
// numeric string, floored; anything else is 0 ("use the plan").
function lenientInt(m, ...keys) {
  if (m === undefined) return 0;
  for (const k of keys) {
    if (!m.has(k)) continue;
    let st;
    try {
      st = scalarText(m.get(k));
    } catch {
      return 0;
    }
    if (!st.ok) return 0;
    const f = parseGoFloat(goTrimSpace(st.text));
    if (!f.ok || Number.isNaN(f.value) || f.value <= 0) return 0;
    if (f.value > MAX_INT32) return MAX_INT32;
    return Math.floor(f.value);
  }
  return 0;
}

function isAddress(s) {
  return /^0[xX][0-9a-fA-F]{40}$/.test(s);
}

function appendHost(hosts, h) {
  if (!hosts.includes(h)) hosts.push(h);
  return hosts;
}

function parseTenant(node, where, defaultSlug) {
  let r;
  try {
    r = decodeStruct(node, TENANT_SCHEMA);
  } catch (e) {
    throw new DirectoryError(where, "", "not a tenant object: " + e.message);
  }
  const t = {};
  t.slug = r.slug !== undefined ? r.slug : defaultSlug;
  const name = t.slug === "" ? where : t.slug;
  const fail = (field, reason) => new DirectoryError(name, field, reason);
  if (!validSlug(t.slug)) throw fail("slug", `${JSON.stringify(t.slug)} does not match ^[a-z0-9][a-z0-9-]{0,62}$`);
  if (r.workerName === undefined || goTrimSpace(r.workerName) === "") throw fail("workerName", "is required");
  t.workerName = goTrimSpace(r.workerName);
  if (utf8Len(t.workerName) > 255) throw fail("workerName", "longer than 255 characters");
  t.plan = normalizePlan(r.plan ?? "");
  const hosts = (r.hosts || []).slice();
  if (r.host !== undefined && r.host !== "") hosts.push(r.host);
  t.hosts = [];
  for (const h of hosts) {
    const nh = normalizeHost(h);
    if (nh === null) throw fail("hosts", `${JSON.stringify(h)} is not a valid host name`);
    appendHost(t.hosts, nh);
  }
  const guard = (field, fn) => {
    try {
      return fn();
    } catch (e) {
      throw fail(field, e.message);
    }
  };
  t.priceUsd = guard("priceUsd", () => parseMoney(r.priceUsd));
  t.x402Enabled = r.x402Enabled === true;
  t.usageLimit = { dailyRequests: 0, monthlyRequests: 0 };
  if (r.usageLimit !== undefined) {
    t.usageLimit.dailyRequests = guard("usageLimit.dailyRequests", () => parseCount(r.usageLimit.dailyRequests));
    t.usageLimit.monthlyRequests = guard("usageLimit.monthlyRequests", () => parseCount(r.usageLimit.monthlyRequests));
  }
  t.spendLimit = { dailySpendUsd: "0", monthlySpendUsd: "0" };
  if (r.spendLimit !== undefined) {
    t.spendLimit.dailySpendUsd = guard("spendLimit.dailySpendUsd", () => parseMoney(r.spendLimit.dailySpendUsd));
    t.spendLimit.monthlySpendUsd = guard("spendLimit.monthlySpendUsd", () => parseMoney(r.spendLimit.monthlySpendUsd));
  }
  t.limits = {
    cpuMs: lenientInt(r.limits, "cpuMs", "cpu_ms"),
    subRequests: lenientInt(r.limits, "subRequests", "subrequests"),
  };
  t.rateLimit = { perCaller: { requests: 0, windowSeconds: 0 }, global: { requests: 0, windowSeconds: 0 } };
  if (r.rateLimit !== undefined) {
    t.rateLimit.perCaller = guard("rateLimit.perCaller", () => parseRate(r.rateLimit.perCaller));
    t.rateLimit.global = guard("rateLimit.global", () => parseRate(r.rateLimit.global));
  }
  t.ownerUserId = r.ownerUserId !== undefined ? r.ownerUserId : r.owner !== undefined ? r.owner : "";
  t.directory = r.directory !== undefined ? goTrimSpace(r.directory) : "";
  t.payTo = "";
  if (r.payTo !== undefined && r.payTo !== "") {
    if (!isAddress(r.payTo)) throw fail("payTo", `${JSON.stringify(r.payTo)} is not a 0x-prefixed 20-byte hex address`);
    t.payTo = r.payTo;
  }
  return t;
}

// Go sorts map keys by bytes, which for UTF-8 is code point order.
function compareCodePoints(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

// newDirectory is tenant.NewDirectory: validate again, index by slug and host.
function newDirectory(tenants) {
  const dir = { tenants: [], bySlug: new Map(), byHost: new Map() };
  for (const t of tenants) {
    if (!validSlug(t.slug)) throw new DirectoryError(t.slug, "slug", `${JSON.stringify(t.slug)} does not match ^[a-z0-9][a-z0-9-]{0,62}$`);
    if (!t.workerName) throw new DirectoryError(t.slug, "workerName", "is required");
    if (dir.bySlug.has(t.slug)) throw new DirectoryError(t.slug, "slug", "duplicate slug");
    dir.bySlug.set(t.slug, t);
    for (let j = 0; j < t.hosts.length; j++) {
      const nh = normalizeHost(t.hosts[j]);
      if (nh === null) throw new DirectoryError(t.slug, "hosts", `${JSON.stringify(t.hosts[j])} is not a valid host name`);
      t.hosts[j] = nh;
      const other = dir.byHost.get(nh);
      if (other) throw new DirectoryError(t.slug, "hosts", `duplicate host ${JSON.stringify(nh)} (also tenant ${JSON.stringify(other.slug)})`);
      dir.byHost.set(nh, t);
    }
    dir.tenants.push(t);
  }
  dir.tenants.sort((a, b) => compareCodePoints(a.slug, b.slug));
  return dir;
}

// parseDirectory is tenant.ParseDirectory: either JSON form, validated
// whole. It throws a DirectoryError naming the tenant and the field.
function parseDirectory(text) {
  if (typeof text !== "string") throw new DirectoryError(null, "", "the directory must be JSON text");
  if (utf8Len(text) > MAX_DIRECTORY_SIZE) throw new DirectoryError(null, "", `larger than ${MAX_DIRECTORY_SIZE} bytes`);
  let raw;
  try {
    raw = decodeStruct(readJSON(text), DIRECTORY_SCHEMA);
  } catch (e) {
    throw new DirectoryError(null, "", e.message);
  }
  if (raw.tenants === undefined && raw.byHost === undefined && raw.bySlug === undefined) {
    throw new DirectoryError(null, "", 'expected a "tenants" array or "byHost"/"bySlug" objects');
  }
  const tenants = [];
  (raw.tenants || []).forEach((node, i) => tenants.push(parseTenant(node, `tenants[${i}]`, "")));
  const slugIndex = new Map();
  const bySlug = raw.bySlug || new Map();
  for (const slug of [...bySlug.keys()].sort(compareCodePoints)) {
    const t = parseTenant(bySlug.get(slug), slug, slug);
    if (t.slug !== slug) throw new DirectoryError(slug, "slug", `${JSON.stringify(t.slug)} differs from its bySlug key`);
    slugIndex.set(slug, tenants.length);
    tenants.push(t);
  }
  const byHost = raw.byHost || new Map();
  for (const host of [...byHost.keys()].sort(compareCodePoints)) {
    const h = normalizeHost(host);
    if (h === null) throw new DirectoryError(host, "byHost", "not a valid host name");
    const dot = h.indexOf(".");
    const def = dot > 0 ? h.slice(0, dot) : h;
    const t = parseTenant(byHost.get(host), host, def);
    if (slugIndex.has(t.slug)) {
      const prev = tenants[slugIndex.get(t.slug)];
      if (prev.workerName !== t.workerName) {
        throw new DirectoryError(t.slug, "workerName", `byHost ${JSON.stringify(host)} names worker ${JSON.stringify(t.workerName)} but bySlug names ${JSON.stringify(prev.workerName)}`);
      }
      appendHost(prev.hosts, h);
      for (const extra of t.hosts) appendHost(prev.hosts, extra);
      continue;
    }
    appendHost(t.hosts, h);
    slugIndex.set(t.slug, tenants.length);
    tenants.push(t);
  }
  return newDirectory(tenants);
}

function isDots(seg) {
  if (seg.length === 0 || seg.length > 6) return false;
  let dots = 0;
  for (let i = 0; i < seg.length; ) {
    if (seg[i] === ".") i++;
    else if (seg[i] === "%" && i + 2 < seg.length && seg[i + 1] === "2" && (seg.charCodeAt(i + 2) | 0x20) === 0x65) i += 3;
    else return false;
    dots++;
  }
  return dots === 1 || dots === 2;
}

// checkPath is tenant.checkPath: it refuses an escaped tenant path that
// could reach another path once something decodes or normalizes it: a "."
// or ".." segment (plain or %2e-encoded), an encoded slash (%2f), a
// backslash (raw or %5c) or an empty segment ("//"). Checking stops at a "?". It returns the refusal
// message, or "" when the path is fine.
function checkPath(p) {
  let segStart = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === "/" || p[i] === "?") {
      if (isDots(p.slice(segStart, i))) return "dot segments are not allowed in the path";
      if (i < p.length && p[i] === "/" && i === segStart && segStart > 0) return "an empty path segment (//) is not allowed in the path";
      if (i < p.length && p[i] === "?") return "";
      segStart = i + 1;
      continue;
    }
    if (p[i] === "\\") return "a backslash (raw or %5C) is not allowed in the path";
    if (p[i] === "%" && i + 2 < p.length) {
      const hi = p[i + 1];
      const lo = String.fromCharCode(p.charCodeAt(i + 2) | 0x20);
      if (hi === "2" && lo === "f") return "an encoded slash (%2F) is not allowed in the path";
      if (hi === "5" && lo === "c") return "a backslash (raw or %5C) is not allowed in the path";
    }
  }
  return "";
}

// resolveTenant is tenant.Directory.Resolve: an exact host match first (the
// host lower-cased, its port stripped), then a path /t/<slug>/<rest>. path
// is the escaped request path. It returns {tenant, path, byHost} or
// {error: "bad_request" | "tenant_not_found", message}.
function resolveTenant(dir, host, path) {
  const h = normalizeHost(host);
  if (h === null) return { error: "bad_request", message: host ? "malformed Host" : "missing Host" };
  const byHost = dir.byHost.get(h);
  if (byHost) {
    const bad = checkPath(path);
    if (bad) return { error: "bad_request", message: bad };
    return { tenant: byHost, path, byHost: true };
  }
  if (!path.startsWith("/t/")) return { error: "tenant_not_found", message: "no tenant for this host or path" };
  const rest = path.slice(3);
  const i = rest.indexOf("/");
  const slug = i >= 0 ? rest.slice(0, i) : rest;
  const tail = i >= 0 ? rest.slice(i) : "/";
  if (!validSlug(slug)) return { error: "bad_request", message: "bad tenant slug in path" };
  const t = dir.bySlug.get(slug);
  if (!t) return { error: "tenant_not_found", message: "no tenant for this host or path" };
  const bad = checkPath(tail);
  if (bad) return { error: "bad_request", message: bad };
  return { tenant: t, path: tail, byHost: false };
}

// ---------------------------------------------------------------------------
// Signed gateway requests (mirror of the Go Sign/Verify).

const SIGNATURE_VERSION = "v1";
const HEADERS = Object.freeze({
  requestId: "x-request-id",
  timestamp: "x-dispatch-timestamp",
  tenant: "x-dispatch-tenant",
  worker: "x-dispatch-worker",
  plan: "x-dispatch-plan",
  cpuMs: "x-dispatch-cpu-ms",
  subRequests: "x-dispatch-subrequests",
  host: "x-dispatch-host",
  path: "x-dispatch-path",
  signature: "x-dispatch-signature",
});

// signatureBase is the exact text the HMAC covers, one value per line.
function signatureBase(v) {
  return [
    SIGNATURE_VERSION,
    v.timestamp,
    v.requestId,
    v.tenant,
    v.worker,
    v.plan,
    v.cpuMs,
    v.subRequests,
    v.method,
    v.host,
    v.path,
  ].join("\n");
}

function hexToBytes(hex) {
  if (!/^(?:[0-9a-f]{2})+$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function hmacKey(secret, usage) {
  return crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

async function sign(secret, values) {
  const key = await hmacKey(secret, "sign");
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(signatureBase(values))));
  return SIGNATURE_VERSION + "=" + [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const POSITIVE_INT = /^[1-9][0-9]{0,9}$/;
const positiveInt = (s) => POSITIVE_INT.test(s) && Number(s) <= MAX_INT32;

// verifySignedRequest checks a gateway request's signed headers. It returns
// {ok: true, values} or {ok: false, message}. nowSeconds is Unix time.
async function verifySignedRequest(request, secret, nowSeconds, maxSkewSeconds = 300) {
  const h = request.headers;
  const sig = h.get(HEADERS.signature);
  if (!sig) return { ok: false, message: "the request is not signed" };
  const values = {
    timestamp: h.get(HEADERS.timestamp) ?? "",
    requestId: h.get(HEADERS.requestId) ?? "",
    tenant: h.get(HEADERS.tenant) ?? "",
    worker: h.get(HEADERS.worker) ?? "",
    plan: h.get(HEADERS.plan) ?? "",
    cpuMs: h.get(HEADERS.cpuMs) ?? "",
    subRequests: h.get(HEADERS.subRequests) ?? "",
    method: request.method,
    host: h.get(HEADERS.host) ?? "",
    path: h.get(HEADERS.path) ?? "",
  };
  if (!/^[0-9]{1,12}$/.test(values.timestamp)) return { ok: false, message: "missing or malformed signature timestamp" };
  const skew = Math.abs(nowSeconds - Number(values.timestamp));
  if (skew > maxSkewSeconds) return { ok: false, message: `the signature is stale (${skew} s from now, at most ${maxSkewSeconds} s allowed)` };
  if (!sig.startsWith(SIGNATURE_VERSION + "=")) return { ok: false, message: "unsupported signature version" };
  const mac = hexToBytes(sig.slice(SIGNATURE_VERSION.length + 1));
  if (!mac || mac.length !== 32) return { ok: false, message: "malformed signature" };
  const key = await hmacKey(secret, "verify");
  // crypto.subtle.verify compares in constant time.
  const good = await crypto.subtle.verify("HMAC", key, mac, new TextEncoder().encode(signatureBase(values)));
  if (!good) return { ok: false, message: "the signature does not match the request" };
  if (!values.requestId || !values.worker || !values.path.startsWith("/")) return { ok: false, message: "signed request lacks a request id, worker or path" };
  if (!positiveInt(values.cpuMs) || !positiveInt(values.subRequests)) return { ok: false, message: "signed limits are not positive integers" };
  return { ok: true, values };
}

// ---------------------------------------------------------------------------
// Error classification of the dispatch namespace's exceptions.

const LIMIT_PATTERNS = [
  /exceeded (?:its )?cpu/i,
  /cpu time limit/i,
  /exceeded resource limits/i,
  /too many subrequests/i,
  /subrequest limit/i,
];

// classifyError maps an exception from DISPATCHER.get(...).fetch(...) to an
// error code: "Worker not found" -> worker_not_found; an exceeded CPU or
// subrequest limit -> worker_limit_exceeded; anything else ->
// tenant_worker_failure.
function classifyError(err) {
  const msg = String((err && err.message) || err || "");
  if (msg.startsWith("Worker not found")) return "worker_not_found";
  if (LIMIT_PATTERNS.some((re) => re.test(msg))) return "worker_limit_exceeded";
  return "tenant_worker_failure";
}

const STATUS = Object.freeze({
  bad_request: 400,
  unauthorized: 401,
  tenant_not_found: 404,
  worker_not_found: 404,
  not_found: 404,
  invalid_directory: 500,
  tenant_worker_failure: 502,
  worker_limit_exceeded: 503,
});

const MESSAGES = Object.freeze({
  worker_not_found: "the tenant's worker does not exist",
  worker_limit_exceeded: "the tenant's worker exceeded its limits",
  tenant_worker_failure: "the tenant's worker failed or is unreachable",
});

function errorResponse(code, message, requestId, tenantId) {
  const headers = new Headers({
    "content-type": "application/json",
    "x-request-id": requestId,
    "x-dispatch-error": code,
    "cache-control": "no-store",
  });
  if (tenantId) headers.set("x-tenant-id", tenantId);
  const body = JSON.stringify({ ok: false, error: code, message, requestId });
  return new Response(body, { status: STATUS[code] || 500, headers });
}

// ---------------------------------------------------------------------------
// Request handling.

function requestIdFrom(value) {
  if (!value || value.length > 64) return null;
  let s = value;
  if (s.length === 45 && s.slice(0, 9).toLowerCase() === "urn:uuid:") s = s.slice(9);
  else if (s.length === 38 && s[0] === "{" && s[37] === "}") s = s.slice(1, 37);
  if (/^[0-9a-fA-F]{32}$/.test(s)) s = `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
  if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(s)) return null;
  return s.toLowerCase();
}

let cachedText = null;
let cachedDirectory = null;
let cachedError = null;

function directoryFrom(env) {
  const text = env.TENANT_DIRECTORY_JSON;
  if (typeof text !== "string") return { error: new DirectoryError(null, "", "TENANT_DIRECTORY_JSON is not set") };
  if (text !== cachedText) {
    cachedText = text;
    try {
      cachedDirectory = parseDirectory(text);
      cachedError = null;
    } catch (e) {
      cachedDirectory = null;
      cachedError = e;
    }
  }
  return cachedError ? { error: cachedError } : { dir: cachedDirectory };
}

function modeOf(env) {
  const m = String(env.DISPATCH_MODE || "").toLowerCase();
  if (m === "edge" || m === "gateway" || m === "both") return m;
  return env.DISPATCH_SECRET ? "gateway" : "edge";
}

// forward calls the user worker and finishes its answer.
async function forward(env, request, url, route, requestId) {
  const headers = new Headers(request.headers);
  for (const name of [...headers.keys()]) {
    if (name.startsWith("x-dispatch-")) headers.delete(name);
  }
  headers.set("x-request-id", requestId);
  headers.set("x-tenant-id", route.tenantId);
  const init = { method: request.method, headers, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "HEAD") init.body = request.body;
  const outgoing = new Request(url, init);
  let response;
  try {
    const worker = env.DISPATCHER.get(route.workerName, {}, { limits: { cpuMs: route.limits.cpuMs, subRequests: route.limits.subRequests } });
    response = await worker.fetch(outgoing);
  } catch (e) {
    const code = classifyError(e);
    const detail = code === "worker_not_found" ? `no worker named ${JSON.stringify(route.workerName)} in the dispatch namespace` : String((e && e.message) || e);
    return errorResponse(code, `${MESSAGES[code]}: ${detail}`, requestId, route.tenantId);
  }
  const out = new Response(response.body, response);
  out.headers.set("x-request-id", requestId);
  out.headers.set("x-tenant-id", route.tenantId);
  out.headers.delete("x-dispatch-error");
  return out;
}

async function handleEdge(request, env, url, requestId) {
  const { dir, error } = directoryFrom(env);
  if (error) return errorResponse("invalid_directory", "the tenant directory is invalid: " + error.message, requestId);
  const res = resolveTenant(dir, url.host, url.pathname);
  if (res.error) return errorResponse(res.error, res.message, requestId);
  const t = res.tenant;
  const limits = resolveLimits(t.plan, t.limits, { allowRaise: String(env.DISPATCH_ALLOW_LIMIT_RAISE) === "true" });
  const target = new URL(url.href);
  target.pathname = res.path;
  return forward(env, request, target.href, { tenantId: t.slug, workerName: t.workerName, limits }, requestId);
}

async function handleGateway(request, env, url) {
  const claimed = request.headers.get(HEADERS.requestId) || "";
  const rid = requestIdFrom(claimed) || claimed.slice(0, 64) || crypto.randomUUID();
  if (!env.DISPATCH_SECRET) return errorResponse("unauthorized", "DISPATCH_SECRET is not configured", rid);
  const skew = Number(env.DISPATCH_MAX_SKEW_SECONDS || 300);
  const v = await verifySignedRequest(request, env.DISPATCH_SECRET, Math.floor(Date.now() / 1000), skew > 0 ? skew : 300);
  if (!v.ok) return errorResponse("unauthorized", v.message, rid);
  const s = v.values;
  const host = s.host || url.host;
  let target;
  try {
    target = new URL(s.path, `${url.protocol}//${host}`);
  } catch {
    return errorResponse("bad_request", "the signed host or path is not a valid URL", s.requestId, s.tenant);
  }
  return forward(env, request, target.href, { tenantId: s.tenant, workerName: s.worker, limits: { cpuMs: Number(s.cpuMs), subRequests: Number(s.subRequests) } }, s.requestId);
}

// The module's only export. workerd accepts no named exports but handlers
// and entrypoints, so the functions the tests (and other tools) use hang off
// the default export as `internals`; Cloudflare ignores that property.
export default {
  internals: {
    DEFAULT_PLANS,
    normalizePlan,
    planLimits,
    resolveLimits,
    MAX_PRICE_DECIMALS,
    MAX_DIRECTORY_SIZE,
    DirectoryError,
    validSlug,
    normalizeHost,
    parseDirectory,
    resolveTenant,
    SIGNATURE_VERSION,
    HEADERS,
    signatureBase,
    sign,
    verifySignedRequest,
    classifyError,
    STATUS,
    errorResponse,
  },
  async fetch(request, env) {
    const url = new URL(request.url);
    const mode = modeOf(env);
    const signed = request.headers.has(HEADERS.signature);
    if (mode === "gateway" || (mode === "both" && signed)) return handleGateway(request, env, url);
    const requestId = requestIdFrom(request.headers.get("x-request-id")) || crypto.randomUUID();
    if (url.pathname === "/__platform/health") {
      return new Response('{"ok":true}', { headers: { "content-type": "application/json", "x-request-id": requestId } });
    }
    if (url.pathname.startsWith("/__platform/")) return errorResponse("not_found", "no platform route " + url.pathname, requestId);
    return handleEdge(request, env, url, requestId);
  },
};
