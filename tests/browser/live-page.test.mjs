// The live page in a real headless Chromium (Debian's /usr/bin/chromium via playwright-core):
//  1. against `run --replay` of the main recording, the page shows its exact counts
//     (the recording's REST truth, written by hand) and a screenshot is saved;
//  2. against `run` fed by `serve-replay --rate 20`, the events figure changes within one
//     second, three times in a row, without the page reloading; the REST requests figure
//     shows at least the baseline's nine counts (0 in the replay of 1);
//  3. the same against a `run` behind `--web-basic-auth` (the browser's credentials reach
//     the page and its event stream; without them the page is refused).
// Usage: node live-page.test.mjs [--screenshot PATH]   (binary: $PREFECT_EXPORTER_BIN)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.PREFECT_EXPORTER_BIN || join(root, "target/release/prefect-events-exporter");
const recording = join(root, "replay-data/prefect-3.9.1-main.jsonl");
const shotArg = process.argv.indexOf("--screenshot");
const screenshot = shotArg > 0 ? resolve(process.argv[shotArg + 1]) : join(tmpdir(), "live-page.png");
const children = [];

/** Starts the binary with `args`; resolves to its listen address (from its JSON log). */
function start(args, readyLine) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bin, [...args, "--listen", "127.0.0.1:0", "--log-format", "json"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(child);
    const timer = setTimeout(() => reject(new Error(`${args[0]}: no listen address within 30 s`)), 30000);
    let buffered = "";
    child.stderr.on("data", (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const listen = JSON.parse(line).fields?.listen;
          if (listen && line.includes(readyLine)) {
            clearTimeout(timer);
            resolvePromise(listen);
          }
        } catch { /* not JSON */ }
      }
    });
    child.on("exit", (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

/** Polls `url` (with `headers`) until it answers 200 (readiness), within 30 s. */
async function ready(url, headers = {}) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    try { if ((await fetch(url, { headers })).status === 200) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} not ready within 30 s`);
}

/** The events figure of the page at `url` changes within 1 s of events, three times in a
 * row, without the page reloading. */
async function followsLive(page, url) {
  await page.goto(url);
  await page.locator("#received").filter({ hasText: /^\d+$/ }).waitFor({ timeout: 10000 });
  await page.evaluate(() => { window.__notReloaded = true; });
  for (let i = 0; i < 3; i++) {
    const before = await page.locator("#received").textContent();
    const started = Date.now();
    await page.waitForFunction((prev) => document.getElementById("received").textContent !== prev, before, { timeout: 1000 });
    const after = await page.locator("#received").textContent();
    console.log(`ok: events ${before} -> ${after} in ${Date.now() - started} ms`);
  }
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page did not reload");
}

// Part 3's credentials: the hash is bcrypt (cost 4) of the password, made with
// python3 -c 'import crypt; print(crypt.crypt("live-page-secret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))'
const user = "live";
const password = "live-page-secret";
const hash = "$2b$04$9wHCdiEUuTh1SYEHe.8qGuuoI/Hnp818U0Vhts/maKnM8KDO3LamO";

const userDataDir = mkdtempSync(join(tmpdir(), "live-page-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1000, height: 900 },
    // Sent only when a server asks (401 with a Basic challenge): parts 1 and 2 never do.
    httpCredentials: { username: user, password },
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-sync", "--disable-quic"],
  });
  const page = context.pages()[0] || (await context.newPage());

  // 1. Exact counts of the recording.
  const replay = await start(["run", "--replay", recording], "Serving HTTP");
  await ready(`http://${replay}/readyz`);
  await page.goto(`http://${replay}/`);
  const expected = { COMPLETED: 659, FAILED: 20, CANCELLED: 4, CRASHED: 1, PENDING: 3, SCHEDULED: 6, RUNNING: 0 };
  for (const [type, n] of Object.entries(expected)) {
    await page.locator(`#count-${type}`).filter({ hasText: new RegExp(`^${n}$`) }).waitFor({ timeout: 10000 });
  }
  assert.equal(await page.locator("#total").textContent(), "693 in all");
  await page.locator("#spark polyline").first().waitFor({ timeout: 10000 });
  await page.locator("#late tr").first().waitFor({ timeout: 10000 });
  // A replay makes no REST request.
  await page.locator("#rest-requests").filter({ hasText: /^0$/ }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`ok: the page shows the recording's counts (Completed 659, …); screenshot ${screenshot}`);

  // 2. Live: a figure changes within 1 s of events, without a reload.
  const server = await start(["serve-replay", recording, "--rate", "20"], "");
  const live = await start(["run", "--prefect-api-url", `http://${server}/api`], "Serving HTTP");
  await ready(`http://${live}/readyz`);
  await followsLive(page, `http://${live}/`);
  // Ready means the baseline was taken: nine flow-run counts at least, one per state type.
  await page.waitForFunction(() => Number(document.getElementById("rest-requests").textContent) >= 9, null, { timeout: 10000 });
  console.log(`ok: REST requests ${await page.locator("#rest-requests").textContent()}`);
  console.log("ok: the page follows a live stream without reloading");

  // 3. Behind --web-basic-auth, fed by the same server.
  const guarded = await start(["run", "--prefect-api-url", `http://${server}/api`,
    "--web-basic-auth", `${user}:${hash}`], "Serving HTTP");
  const authorization = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
  for (const path of ["/", "/api/v1/stream"]) {
    const refused = await fetch(`http://${guarded}${path}`);
    assert.equal(refused.status, 401, `${path} without credentials`);
    await refused.body?.cancel();
  }
  await ready(`http://${guarded}/readyz`, { authorization });
  await followsLive(page, `http://${guarded}/`);
  console.log("ok: behind --web-basic-auth, the page follows the stream with the browser's credentials");
} finally {
  if (context) await context.close();
  for (const child of children) child.kill("SIGTERM");
  rmSync(userDataDir, { recursive: true, force: true });
}
