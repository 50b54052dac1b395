// roster's web UI: views of /v1/services kept live by Consul blocking
// queries, and the two everyday writes on an instance (maintenance on/off,
// deregister) through the native API with the user's token
// (src/http/ui.rs says what this page may and may not do).
//
// Everything shown comes from registrants (names, tags, metadata, check
// output), so it is written with textContent and never parsed as HTML:
// the el() helper below is the only way this script makes elements.
"use strict";

const TOKEN_KEY = "roster-ui-token";
// How long the server may hold a blocking query; the fetch gives up a
// little later, so a lost connection is noticed.
const WAIT = "30s";
const FETCH_LIMIT_MS = 40000;
// Pause after a failed request before trying again.
const RETRY_MS = 2000;

const $ = (id) => document.getElementById(id);

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.dataset[key.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// An API error with the server's own words: the JSON {"error": ...} of the
// native API, or the plain text of the Consul adapter's refusals.
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// `options.method` and `options.body` (sent as JSON) for writes.
async function api(path, signal, options = {}) {
  const headers = { Accept: "application/json" };
  const secret = token();
  if (secret) headers["X-Consul-Token"] = secret;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const limit = AbortSignal.timeout(FETCH_LIMIT_MS);
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: signal ? AbortSignal.any([signal, limit]) : limit,
    cache: "no-store",
    credentials: "omit",
  });
  const text = await response.text();
  if (!response.ok) {
    let message = text.trim();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") message = body.error;
    } catch (_) {
      // Not JSON: the text is the message.
    }
    throw new ApiError(response.status, `${response.status} ${response.statusText}: ${message || "(no message)"}`);
  }
  return { body: text ? JSON.parse(text) : null, index: response.headers.get("X-Consul-Index") };
}

// Errors by source, so one view recovering does not hide another's 403.
const errors = new Map();
function setError(source, error) {
  if (error) errors.set(source, error.message || String(error));
  else errors.delete(source);
  const box = $("error");
  // Both views refused for one reason (a bad token) say it once.
  box.textContent = [...new Set(errors.values())].join("\n");
  box.hidden = errors.size === 0;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

// Calls refresh() now and again whenever the Consul index at `watchPath`
// moves, until `signal` aborts. The index is read before each refresh, so
// a change landing during a refresh still answers the next blocking query.
async function follow(source, watchPath, refresh, signal) {
  let index = "0";
  while (!signal.aborted) {
    try {
      const sep = watchPath.includes("?") ? "&" : "?";
      const answer = await api(`${watchPath}${sep}index=${encodeURIComponent(index)}&wait=${WAIT}`, signal);
      const next = answer.index || "0";
      if (signal.aborted) return;
      if (next !== index) {
        index = next;
        await refresh(signal);
      }
      setError(source, null);
      $("live").textContent = `live · index ${index}`;
    } catch (error) {
      if (signal.aborted) return;
      setError(source, error);
      $("live").textContent = "not connected: retrying";
      index = "0";
      await sleep(RETRY_MS, signal);
    }
  }
}

// ---- the service list ----

let selected = null;

function counts(service) {
  const healthy = service.in_dns;
  const cls = healthy === service.instances ? "counts" : healthy === 0 ? "counts all-down" : "counts some-down";
  return el("span", { class: cls, title: "healthy / total instances" }, `${healthy}/${service.instances}`);
}

async function refreshServices(signal) {
  const { body } = await api("/v1/services", signal);
  if (signal.aborted) return;
  const list = $("services");
  const items = body
    .slice()
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((service) => {
      const button = el(
        "button",
        { type: "button", "data-service": service.name, "aria-current": String(service.name === selected) },
        el("span", { class: "name" }, service.name),
        counts(service),
      );
      button.addEventListener("click", () => select(service.name));
      return el("li", { "data-service": service.name }, button);
    });
  list.replaceChildren(...items);
  $("no-services").hidden = items.length !== 0;
}

// ---- one service ----

function statusText(status) {
  return el("span", { class: `status status-${status}` }, status);
}

// ---- writes ----

function instancePath(service, id) {
  return `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`;
}

// Runs one write; a refusal shows in the server's words. The view itself
// changes only when the live query sees the registry change.
async function write(button, what, path, options) {
  button.disabled = true;
  try {
    await api(path, null, options);
    setError("action", null);
  } catch (error) {
    setError("action", new Error(`${what}: ${error.message}`));
  } finally {
    button.disabled = false;
  }
}

function actions(service, instance) {
  const path = instancePath(service, instance.id);
  const draining = instance.maintenance !== null && instance.maintenance !== undefined;
  const reason = el("input", {
    class: "maintenance-reason", type: "text", maxlength: "256",
    placeholder: "reason (optional)", "aria-label": `maintenance reason for ${instance.id}`,
  });
  reason.hidden = draining;
  const maintenance = el("button", { type: "button", class: "action-maintenance" },
    draining ? "End maintenance" : "Start maintenance");
  maintenance.addEventListener("click", () => {
    const body = draining ? { enable: false } : { enable: true, reason: reason.value };
    write(maintenance, `maintenance of ${instance.id}`, `${path}/maintenance`, { method: "PUT", body });
  });
  // Two clicks, no dialog: the first arms the button, the second acts.
  const deregister = el("button", { type: "button", class: "action-deregister danger" }, "Deregister…");
  deregister.addEventListener("click", () => {
    if (deregister.dataset.armed !== "true") {
      deregister.dataset.armed = "true";
      deregister.textContent = `Deregister ${instance.id}: click again`;
      return;
    }
    write(deregister, `deregister ${instance.id}`, path, { method: "DELETE" });
  });
  return el("div", { class: "actions" }, reason, maintenance, deregister);
}

function instanceCard(service, instance) {
  const tags = instance.tags.length
    ? instance.tags.map((tag) => el("span", { class: "tag" }, tag))
    : ["none"];
  const metaEntries = Object.entries(instance.meta || {});
  const meta = metaEntries.length
    ? el("table", { class: "meta" },
        el("tbody", null, ...metaEntries.map(([key, value]) =>
          el("tr", null, el("th", { scope: "row" }, key), el("td", { class: "meta-value" }, value)))))
    : "none";
  const checks = instance.checks.length
    ? el("table", { class: "checks" },
        el("thead", null, el("tr", null, ...["check", "type", "status", "last output", "since"].map((h) => el("th", null, h)))),
        el("tbody", null, ...instance.checks.map((check) =>
          el("tr", { class: "check", "data-check": check.id },
            el("td", null, check.name || check.id),
            el("td", null, check.type),
            el("td", { class: "check-status" }, statusText(check.status)),
            el("td", { class: "output" }, check.output),
            el("td", null, check.changed_at)))))
    : el("p", null, "No checks: healthy while registered.");
  return el("article", { class: "instance", "data-instance": instance.id },
    el("h3", null, instance.id, " ", statusText(instance.status)),
    el("dl", null,
      el("dt", null, "address"), el("dd", { class: "address" }, instance.address),
      el("dt", null, "port"), el("dd", { class: "port" }, instance.port),
      el("dt", null, "in DNS"), el("dd", { class: "in-dns" }, instance.in_dns ? "yes" : "no"),
      el("dt", null, "maintenance"),
      el("dd", { class: "maintenance-state" },
        instance.maintenance === null || instance.maintenance === undefined
          ? "no"
          : el("span", { class: "maintenance" }, `yes: ${instance.maintenance || "(no reason given)"}`)),
      el("dt", null, "tags"), el("dd", { class: "tags" }, ...tags),
      el("dt", null, "meta"), el("dd", null, meta),
      el("dt", null, "DNS"),
      el("dd", { class: "dns-names" },
        el("div", null, "A/AAAA: ", instance.dns.service),
        el("div", null, "SRV: ", instance.dns.srv),
        el("div", null, "instance: ", instance.dns.instance))),
    checks,
    actions(service, instance));
}

async function refreshService(name, signal) {
  let body;
  try {
    ({ body } = await api(`/v1/services/${encodeURIComponent(name)}`, signal));
  } catch (error) {
    // Deregistered while shown: say so rather than keep stale cards.
    if (error.status === 404) {
      body = { name, dns_name: "", instances: [] };
    } else {
      throw error;
    }
  }
  if (signal.aborted || name !== selected) return;
  $("detail-title").textContent = body.name;
  $("detail-dns").textContent = body.dns_name ? `DNS: ${body.dns_name}` : "";
  const cards = body.instances.map((instance) => instanceCard(name, instance));
  $("instances").replaceChildren(...(cards.length ? cards : [el("p", null, "No instances registered.")]));
}

// ---- wiring ----

let listWatch = null;
let serviceWatch = null;

function select(name) {
  selected = name;
  if (serviceWatch) serviceWatch.abort();
  setError("service", null);
  setError("action", null);
  for (const button of document.querySelectorAll("#services button")) {
    button.setAttribute("aria-current", String(button.dataset.service === name));
  }
  $("instances").replaceChildren();
  if (name === null) {
    $("detail-title").textContent = "Select a service";
    $("detail-dns").textContent = "";
    history.replaceState(null, "", location.pathname);
    return;
  }
  $("detail-title").textContent = name;
  $("detail-dns").textContent = "";
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  serviceWatch = new AbortController();
  follow("service", `/v1/health/service/${encodeURIComponent(name)}`, (signal) => refreshService(name, signal), serviceWatch.signal);
}

function start() {
  if (listWatch) listWatch.abort();
  setError("services", null);
  listWatch = new AbortController();
  follow("services", "/v1/catalog/services", refreshServices, listWatch.signal);
  select(selected);
}

function init() {
  const input = $("token");
  input.value = token();
  const apply = () => {
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    start();
  };
  $("token-save").addEventListener("click", apply);
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") apply(); });
  $("token-clear").addEventListener("click", () => { input.value = ""; apply(); });
  if (location.hash.length > 1) {
    try {
      selected = decodeURIComponent(location.hash.slice(1));
    } catch (_) {
      selected = null;
    }
  }
  start();
}

init();
