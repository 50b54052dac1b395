// Drives roster's web UI (/ui/) in headless Chromium through playwright-core.
// Run by tests/ui.rs, which starts roster, registers the services this
// script expects, and reads its exit status and "all passed".
//
//   node ui_test.js --url http://127.0.0.1:PORT --mode live
//   node ui_test.js --url http://127.0.0.1:PORT --mode acl --token SECRET --write-token SECRET
//
// ROSTER_UI_NODE_MODULES names the directory holding node_modules/ (under
// target/, where the Rust test ran `npm ci`); ROSTER_CHROMIUM the browser.
// Every wait is bounded; the whole run is bounded by WHOLE_LIMIT_MS.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const { chromium } = require(path.join(process.env.ROSTER_UI_NODE_MODULES || __dirname, "node_modules", "playwright-core"));

const STEP_MS = 15000; // one expectation
const WHOLE_LIMIT_MS = 120000; // the whole script
const XSS = "<img src=x onerror=alert(1)>";

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  if (!out.url || !out.mode) throw new Error("usage: --url URL --mode live|acl [--token T --write-token W]");
  return out;
}

function log(message) {
  console.log(`ui_test: ${message}`);
}

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

// Waits until `read()` (in the page) returns `want`; fails with the last value.
async function until(page, what, read, want, arg) {
  const deadline = Date.now() + STEP_MS;
  let last;
  for (;;) {
    last = await page.evaluate(read, arg).catch((e) => `<evaluate failed: ${e.message}>`);
    if (last === want) return;
    if (Date.now() > deadline) throw new Error(`${what}: wanted ${JSON.stringify(want)}, still ${JSON.stringify(last)} after ${STEP_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const countsOf = (name) => document.querySelector(`#services button[data-service="${name}"] .counts`)?.textContent ?? null;
const field = ([id, cls]) => document.querySelector(`article[data-instance="${id}"] .${cls}`)?.textContent ?? null;
// Each of these runs in the page, so it must stand alone.
const errorText = () => {
  const box = document.getElementById("error");
  return box.hidden ? "" : box.textContent;
};
const errorHas = (text) => {
  const box = document.getElementById("error");
  return !box.hidden && box.textContent.includes(text);
};

async function api(base, method, urlPath, body) {
  const response = await fetch(new URL(urlPath, base), {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_MS),
  });
  const text = await response.text();
  assert(response.ok, `${method} ${urlPath}: ${response.status} ${text}`);
}

// The live view: counts, one service's instances, a change shown without a
// reload, registrant strings rendered as text.
async function live(page, base) {
  await page.goto(new URL("/ui/", base).href, { timeout: STEP_MS });
  await until(page, "web counts", countsOf, "1/2", "web");
  await until(page, "db counts", countsOf, "1/1", "db");
  log("lists web 1/2 and db 1/1");

  // Set once; a reload would lose it.
  await page.evaluate(() => { window.__sameDocument = true; });

  await page.click('#services button[data-service="web"]', { timeout: STEP_MS });
  await until(page, "web-1 address", field, "127.0.0.1", ["web-1", "address"]);
  await until(page, "web-1 port", field, "8081", ["web-1", "port"]);
  await until(page, "web-1 check", field, "passing", ["web-1", "check-status"]);
  await until(page, "web-2 check", field, "critical", ["web-2", "check-status"]);
  await until(page, "web-2 in DNS", field, "no", ["web-2", "in-dns"]);
  await until(page, "web-1 tags", field, "httpprimary", ["web-1", "tags"]);
  log("web shows web-1 at 127.0.0.1:8081 passing, web-2 critical");

  await api(base, "PUT", "/v1/services/web/instances/web-3", { address: "127.0.0.3", port: 8083 });
  await until(page, "web-3 appears", field, "127.0.0.3", ["web-3", "address"]);
  await until(page, "web counts after web-3", countsOf, "2/3", "web");
  await api(base, "PUT", "/v1/services/web/instances/web-1/maintenance", { enable: true, reason: "deploying" });
  await until(page, "web-1 maintenance", field, "yes: deploying", ["web-1", "maintenance-state"]);
  await until(page, "web counts in maintenance", countsOf, "1/3", "web");
  await api(base, "DELETE", "/v1/services/web/instances/web-3");
  await until(page, "web-3 gone", () => document.querySelector('article[data-instance="web-3"]') === null, true);
  assert(await page.evaluate(() => window.__sameDocument === true), "the page reloaded");
  log("registration, maintenance and deregistration shown without a reload");

  // The writes on a card: maintenance off and on, deregistration in two clicks.
  await until(page, "web counts, web-1 drained and web-2 critical", countsOf, "0/2", "web");
  await page.click('article[data-instance="web-1"] .action-maintenance', { timeout: STEP_MS });
  await until(page, "web-1 out of maintenance from the UI", field, "no", ["web-1", "maintenance-state"]);
  await until(page, "web counts after the UI ended maintenance", countsOf, "1/2", "web");
  await page.fill('article[data-instance="web-2"] .maintenance-reason', "from the UI", { timeout: STEP_MS });
  await page.click('article[data-instance="web-2"] .action-maintenance', { timeout: STEP_MS });
  await until(page, "web-2 in maintenance from the UI", field, "yes: from the UI", ["web-2", "maintenance-state"]);
  await page.click('article[data-instance="web-2"] .action-deregister', { timeout: STEP_MS });
  const armed = await page.textContent('article[data-instance="web-2"] .action-deregister', { timeout: STEP_MS });
  assert(armed.includes("click again"), `one click only arms deregistration: ${armed}`);
  assert(await page.evaluate(() => document.querySelector('article[data-instance="web-2"]') !== null), "one click deregistered");
  await page.click('article[data-instance="web-2"] .action-deregister', { timeout: STEP_MS });
  await until(page, "web-2 deregistered from the UI", () => document.querySelector('article[data-instance="web-2"]') === null, true);
  await until(page, "web counts after the UI deregistered web-2", countsOf, "1/1", "web");
  await until(page, "no error after the UI's writes", errorText, "");
  log("maintenance off and on, and a two-click deregistration, from the UI");

  await page.click('#services button[data-service="db"]', { timeout: STEP_MS });
  await until(page, "db meta as text", () => document.querySelector('article[data-instance="db-1"] .meta-value')?.textContent ?? null, XSS);
  const images = await page.evaluate(() => document.querySelectorAll("img").length);
  assert(images === 0, `meta made ${images} <img> element(s)`);
  log("a meta value of HTML renders as text, no element made, nothing ran");
}

// ACLs on: a refusal is shown plainly; the token field fixes it and
// survives a reload (sessionStorage).
async function acl(page, base, secret, writer) {
  await page.goto(new URL("/ui/#db", base).href, { timeout: STEP_MS });
  await until(page, "anonymous sees no services", () => !document.getElementById("no-services").hidden, true);
  await until(page, "anonymous refused db", errorHas, true, "403");
  log(`anonymous: no services, db refused: ${await page.evaluate(errorText)}`);

  await page.fill("#token", "not-a-token", { timeout: STEP_MS });
  await page.click("#token-save", { timeout: STEP_MS });
  await until(page, "unknown token refused", errorHas, true, "ACL not found");
  log(`unknown token: ${await page.evaluate(errorText)}`);

  await page.fill("#token", secret, { timeout: STEP_MS });
  await page.press("#token", "Enter", { timeout: STEP_MS });
  await until(page, "web listed with the token", countsOf, "1/1", "web");
  await until(page, "db still refused", errorHas, true, "Permission denied");
  await page.click('#services button[data-service="web"]', { timeout: STEP_MS });
  await until(page, "web-1 shown", field, "127.0.0.1", ["web-1", "address"]);
  await until(page, "no error once readable", errorText, "");
  const names = await page.evaluate(() => [...document.querySelectorAll("#services button")].map((b) => b.dataset.service).join(","));
  assert(names === "web", `the token reads only web, listed: ${names}`);
  log("the token lists web only and shows it");

  await page.reload({ timeout: STEP_MS });
  await until(page, "token kept across a reload", () => document.getElementById("token").value.length > 0, true);
  await until(page, "web listed after reload", countsOf, "1/1", "web");
  log("the token is kept for the tab");

  // A read-only token's write is refused in roster's words and changes nothing.
  await until(page, "web-1 shown after reload", field, "127.0.0.1", ["web-1", "address"]);
  await page.click('article[data-instance="web-1"] .action-deregister', { timeout: STEP_MS });
  await page.click('article[data-instance="web-1"] .action-deregister', { timeout: STEP_MS });
  await until(page, "reader's deregistration refused", errorHas, true, "Permission denied");
  assert(await page.evaluate(() => document.querySelector('article[data-instance="web-1"]') !== null), "web-1 gone after a refusal");
  log(`read-only token's deregistration refused: ${await page.evaluate(errorText)}`);

  // A token that may write web does it.
  await page.fill("#token", writer, { timeout: STEP_MS });
  await page.press("#token", "Enter", { timeout: STEP_MS });
  await until(page, "web-1 shown to the writer", field, "127.0.0.1", ["web-1", "address"]);
  await page.fill('article[data-instance="web-1"] .maintenance-reason', "by the writer", { timeout: STEP_MS });
  await page.click('article[data-instance="web-1"] .action-maintenance', { timeout: STEP_MS });
  await until(page, "writer's maintenance shown", field, "yes: by the writer", ["web-1", "maintenance-state"]);
  await until(page, "no error after the writer's write", errorText, "");
  log("a token that may write web drains web-1 from the UI");
}

async function main() {
  const options = args();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "roster-ui-chromium-"));
  const problems = [];
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.ROSTER_CHROMIUM || "/usr/bin/chromium",
      headless: true,
      timeout: STEP_MS,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_MS);
    // An alert means registrant HTML ran; a CSP report means the page
    // needed something its policy forbids; an uncaught error is a bug.
    page.on("dialog", (dialog) => {
      problems.push(`dialog: ${dialog.type()} ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (/Content.Security.Policy/i.test(message.text())) problems.push(`CSP: ${message.text()}`);
    });
    if (options.mode === "live") await live(page, options.url);
    else if (options.mode === "acl") await acl(page, options.url, options.token, options["write-token"]);
    else throw new Error(`unknown mode ${options.mode}`);
    assert(problems.length === 0, `problems in the page:\n${problems.join("\n")}`);
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  console.log("all passed");
}

const limit = setTimeout(() => {
  console.error(`ui_test: did not finish in ${WHOLE_LIMIT_MS} ms`);
  process.exit(2);
}, WHOLE_LIMIT_MS);
main().then(
  () => { clearTimeout(limit); process.exit(0); },
  (error) => { console.error(`ui_test: FAILED: ${error.stack || error}`); process.exit(1); },
);
