// Reads a GET /discovery/resources answer (JSON) on stdin and checks it
// with the Bazaar helpers of @x402/extensions: every item's bazaar
// extension must validate (info against its schema, and the protocol-level
// rules), its routeTemplate must pass isValidRouteTemplate, and the list
// must have the fields the package's DiscoveryResourcesResponse names.
// Prints {"ok": true, "checked": N} or {"ok": false, "errors": [...]}.
import {
  validateDiscoveryExtension,
  validateDiscoveryExtensionSpec,
  isValidRouteTemplate,
} from "@x402/extensions/bazaar";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const body = JSON.parse(input);
const errors = [];
let checked = 0;

if (body.x402Version !== 2) errors.push("x402Version is not 2");
if (!Array.isArray(body.items)) errors.push("items is not an array");
for (const k of ["limit", "offset", "total"]) {
  if (typeof body.pagination?.[k] !== "number") errors.push(`pagination.${k} is not a number`);
}
for (const [i, item] of (body.items ?? []).entries()) {
  const where = `items[${i}] ${item.resource}`;
  if (typeof item.resource !== "string") errors.push(`${where}: resource`);
  if (item.type !== "http") errors.push(`${where}: type`);
  if (item.x402Version !== 2) errors.push(`${where}: x402Version`);
  if (!Array.isArray(item.accepts) || item.accepts.length === 0) errors.push(`${where}: accepts`);
  for (const a of item.accepts ?? []) {
    for (const k of ["scheme", "network", "amount", "asset", "payTo"]) {
      if (typeof a[k] !== "string" || a[k] === "") errors.push(`${where}: accepts.${k}`);
    }
    if (typeof a.maxTimeoutSeconds !== "number") errors.push(`${where}: accepts.maxTimeoutSeconds`);
  }
  const ext = item.extensions?.bazaar;
  if (ext === undefined) continue;
  checked++;
  const r = validateDiscoveryExtension(ext);
  if (!r.valid) errors.push(`${where}: validateDiscoveryExtension: ${JSON.stringify(r.errors)}`);
  const s = validateDiscoveryExtensionSpec(ext);
  if (!s.valid) errors.push(`${where}: validateDiscoveryExtensionSpec: ${JSON.stringify(s.errors)}`);
  if (ext.routeTemplate !== undefined && !isValidRouteTemplate(ext.routeTemplate)) {
    errors.push(`${where}: routeTemplate ${ext.routeTemplate} fails isValidRouteTemplate`);
  }
}
console.log(JSON.stringify(errors.length ? { ok: false, errors } : { ok: true, checked }));
