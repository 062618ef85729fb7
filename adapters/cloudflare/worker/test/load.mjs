// Loads the dispatch worker module into Node (it has no imports and uses
// only web APIs Node has), for the tests of its pure functions.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
export const workerPath = path.join(here, "..", "dispatch.js");
export const workerSource = readFileSync(workerPath, "utf8");
export const testdata = path.join(here, "..", "..", "testdata");

export async function loadWorker() {
  const mod = await import("data:text/javascript;base64," + Buffer.from(workerSource).toString("base64"));
  return mod.default.internals;
}

export function readTestdata(name) {
  return JSON.parse(readFileSync(path.join(testdata, name), "utf8"));
}
