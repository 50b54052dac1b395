"use strict";
// Drives a running roster with the unmodified npm `consul` client.
//
// Run by tests/consul_npm.rs, with node_modules installed by `npm ci` from
// this directory's package-lock.json (kept under target/, not here):
//
//     node suite.js --http-port 8500 --dns-port 8600
//
// It registers services with HTTP, TCP and TTL checks and watches their
// statuses move in the agent, health and catalog endpoints and in roster's
// DNS answers (node's own `dns.promises.Resolver`). Every wait polls with a
// deadline; nothing sleeps for a fixed long time. The first failed check
// ends the run with a non-zero exit status and the stack; progress lines on
// stdout show how far it got.

// node:util parseArgs and http.Server#closeAllConnections need node 18.
if (Number(process.versions.node.split(".")[0]) < 18) {
  console.error(`node ${process.version} is too old for this suite: it needs node >= 18`);
  process.exit(2);
}

const assert = require("node:assert/strict");
const dns = require("node:dns");
const events = require("node:events");
const http = require("node:http");
const net = require("node:net");
const path = require("node:path");
const { parseArgs } = require("node:util");

const Consul = require("consul");

const DOMAIN = "service.local";
// Every wait for a state change: generous, the machine may be busy.
const LIMIT_MS = 20000;
const POLL_MS = 50;
// Check timing used throughout: fast, well above roster's 100ms floor.
const INTERVAL = "1s";

function step(message) {
  console.log(`ok: ${message}`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function check(condition, message) {
  if (!condition) throw new assert.AssertionError({ message });
}

function sorted(values) {
  return [...values].sort();
}

function show(value) {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));
}

// Polls `probe` until it returns `[true, seen]`; fails with the last `seen`
// otherwise, so the message says what the state was instead.
async function eventually(what, probe, limitMs = LIMIT_MS) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const [done, seen] = await probe();
    if (done) return seen;
    if (Date.now() >= deadline) {
      throw new assert.AssertionError({
        message: `${what}: not within ${limitMs / 1000}s; last seen: ${show(seen)}`,
      });
    }
    await sleep(POLL_MS);
  }
}

// `promise`, or a failure after `limitMs`: no request may hang the suite.
async function within(what, promise, limitMs = LIMIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${limitMs / 1000}s`)), limitMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// The error a call rejects with, or a failure if it resolved.
async function rejection(what, promise) {
  try {
    const value = await within(what, promise);
    throw new assert.AssertionError({ message: `${what}: resolved with ${show(value)}, expected an error` });
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    return error;
  }
}

// The client's `ctx` option: with `includeResponse` its calls resolve to
// `[response, body]`, so the test sees the headers (X-Consul-Index).
function withResponse() {
  const ctx = new events.EventEmitter();
  ctx.includeResponse = true;
  return ctx;
}

// roster's DNS server, asked with node's resolver.
class Dns {
  constructor(port) {
    this.resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
    this.resolver.setServers([`127.0.0.1:${port}`]);
  }

  // The SRV answers for <label>.service.local; [] for NXDOMAIN or no data.
  async srv(label) {
    try {
      return await this.resolver.resolveSrv(`${label}.${DOMAIN}`);
    } catch (error) {
      if (error.code === dns.NOTFOUND || error.code === dns.NODATA) return [];
      throw error;
    }
  }

  async a(label) {
    try {
      return sorted(await this.resolver.resolve4(`${label}.${DOMAIN}`));
    } catch (error) {
      if (error.code === dns.NOTFOUND || error.code === dns.NODATA) return [];
      throw error;
    }
  }

  // The instance labels DNS hands out for a service, sorted.
  async targets(label) {
    return sorted((await this.srv(label)).map((record) => record.name.toLowerCase().split(".")[0]));
  }

  // Waits until DNS hands out exactly the instance labels `expected`.
  async waitFor(label, expected) {
    const want = sorted(expected);
    await eventually(`DNS ${label}.${DOMAIN} SRV to serve ${show(want)}`, async () => {
      const got = await this.targets(label);
      return [show(got) === show(want), got];
    });
  }
}

// A tiny HTTP server for HTTP checks: answers every GET with `code`.
class HttpTarget {
  async start() {
    this.code = 200;
    this.headersSeen = [];
    this.server = http.createServer((request, response) => {
      this.headersSeen.push(request.headers);
      response.writeHead(this.code, { "Content-Length": "2" });
      response.end("ok");
    });
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}/health`;
  }

  close() {
    this.server.closeAllConnections();
    this.server.close();
  }
}

// A TCP port for TCP checks that can be opened and closed.
class TcpTarget {
  async open(port = 0) {
    this.server = net.createServer((socket) => socket.destroy());
    await new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", resolve);
    });
    this.port = this.server.address().port;
  }

  async close() {
    await new Promise((resolve) => this.server.close(resolve));
  }
}

class Suite {
  constructor(httpPort, dnsPort) {
    this.consul = new Consul({ host: "127.0.0.1", port: httpPort });
    this.dns = new Dns(dnsPort);
  }

  // -- reading roster through the client --

  async checks() {
    return await within("agent.checks()", this.consul.agent.checks());
  }

  async status(checkId) {
    const seen = (await this.checks())[checkId];
    return seen && seen.Status;
  }

  async waitStatus(checkId, status) {
    await eventually(`check ${checkId} to be ${status}`, async () => {
      const seen = (await this.checks())[checkId];
      return [seen !== undefined && seen.Status === status, seen];
    });
  }

  // The instance IDs of health.service, after checking its index header.
  async healthIds(service, opts = {}) {
    const [response, nodes] = await within(
      `health.service(${service})`,
      this.consul.health.service({ service, ...opts, ctx: withResponse() }),
    );
    const index = BigInt(response.headers["x-consul-index"]);
    check(index > 0n, `health index ${index}`);
    return sorted(nodes.map((node) => node.Service.ID));
  }

  async catalogIds(service, opts = {}) {
    const [response, nodes] = await within(
      `catalog.service.nodes(${service})`,
      this.consul.catalog.service.nodes({ service, ...opts, ctx: withResponse() }),
    );
    const index = BigInt(response.headers["x-consul-index"]);
    check(index > 0n, `catalog index ${index}`);
    return sorted(nodes.map((node) => node.ServiceID));
  }

  async register(service) {
    const result = await within(`register ${service.id}`, this.consul.agent.service.register(service));
    check(result === undefined, `register ${service.id}: ${show(result)}`);
  }

  async deregister(id) {
    await within(`deregister ${id}`, this.consul.agent.service.deregister(id));
  }

  webService(httpTarget) {
    return {
      name: "web",
      id: "web-1",
      address: "127.0.0.1",
      port: httpTarget.port,
      tags: ["v1", "http"],
      meta: { version: "1.2.3" },
      check: {
        http: httpTarget.url,
        interval: INTERVAL,
        timeout: "1s",
        header: { "X-Roster-Test": ["yes"] },
      },
    };
  }

  // -- the scenarios --

  async status_endpoints() {
    check((await this.consul.status.leader()) === "127.0.0.1:8300", "status.leader()");
    check(show(await this.consul.status.peers()) === show(["127.0.0.1:8300"]), "status.peers()");
    check(show(await this.consul.catalog.datacenters()) === show(["dc1"]), "catalog.datacenters()");
    const self = await this.consul.agent.self();
    check(self.Config.Datacenter === "dc1", `agent.self() Config: ${show(self.Config)}`);
    step("status.leader/peers, catalog.datacenters, agent.self");
  }

  async readme_example() {
    // The client README's register/list/deregister round trip, with a name
    // that DNS must map to a label.
    await this.register({ name: "Hello Service", id: "hello-service", address: "localhost", port: 8080, tags: ["http"] });
    const services = await this.consul.catalog.services();
    check(show(services) === show({ "Hello Service": ["http"] }), `catalog.services(): ${show(services)}`);
    const agentServices = await this.consul.agent.services();
    check(agentServices["hello-service"].Service === "Hello Service", `agent.services(): ${show(agentServices)}`);
    check(agentServices["hello-service"].Address === "localhost", "the address as written");
    const one = await this.consul.catalog.service.nodes("Hello Service");
    check(one.length === 1 && one[0].ServicePort === 8080, `catalog.service.nodes(name with a space): ${show(one)}`);
    check(show(await this.dns.a("hello-service")) === show(["127.0.0.1"]), "Hello Service in DNS at localhost's address");
    await this.dns.waitFor("hello-service", ["hello-service"]);
    await this.deregister("hello-service");
    check(!("hello-service" in (await this.consul.agent.services())), "deregistered");
    await this.dns.waitFor("hello-service", []);
    step("register / catalog.services / deregister of 'Hello Service', in and out of DNS");
  }

  async static_instance() {
    // No checks: an instance with a non-loopback address is never probed,
    // and counts as passing.
    await this.register({
      name: "static",
      id: "static-1",
      address: "192.0.2.10",
      port: 9000,
      taggedAddresses: { lan: { address: "192.0.2.10", port: 9000 } },
    });
    const service = (await this.consul.agent.services())["static-1"];
    check(service.TaggedAddresses && service.TaggedAddresses.lan.Address === "192.0.2.10", `TaggedAddresses: ${show(service)}`);
    check(show(await this.healthIds("static", { passing: true })) === show(["static-1"]), "no checks counts as passing");
    check(show(await this.dns.a("static")) === show(["192.0.2.10"]), "A record of the instance address");
    const srv = await this.dns.srv("static");
    check(srv.length === 1 && srv[0].port === 9000, `SRV: ${show(srv)}`);
    await this.deregister("static-1");
    await this.dns.waitFor("static", []);
    step("an instance without checks: passing, A and SRV served, TaggedAddresses kept");
  }

  async http_check(httpTarget) {
    await this.register(this.webService(httpTarget));
    check(["critical", "passing"].includes(await this.status("service:web-1")), "a new check exists");
    await this.waitStatus("service:web-1", "passing");
    check(
      httpTarget.headersSeen.some((headers) => headers["x-roster-test"] === "yes"),
      "the check sends its header",
    );
    const service = (await this.consul.agent.services())["web-1"];
    check(service.Meta.version === "1.2.3", `meta kept: ${show(service)}`);
    await this.dns.waitFor("web", ["web-1"]);
    check(show(await this.healthIds("web", { passing: true })) === show(["web-1"]), "passing web-1");
    step("HTTP check passing, in DNS");

    httpTarget.code = 429;
    await this.waitStatus("service:web-1", "warning");
    check(show(await this.healthIds("web", { passing: true })) === "[]", "warning is not passing");
    check(show(await this.healthIds("web")) === show(["web-1"]), "still listed without passing");
    await this.dns.waitFor("web", []);
    step("HTTP 429: warning, out of passing and DNS");

    httpTarget.code = 500;
    await this.waitStatus("service:web-1", "critical");
    const output = (await this.checks())["service:web-1"].Output;
    check(output.includes("500"), `output names the status: ${show(output)}`);
    step("HTTP 500: critical");

    httpTarget.code = 200;
    await this.waitStatus("service:web-1", "passing");
    await this.dns.waitFor("web", ["web-1"]);
    step("HTTP 200 again: passing, back in DNS");
  }

  async tcp_check(httpTarget, tcpTarget) {
    await this.register({
      name: "web",
      id: "web-2",
      address: "127.0.0.1",
      port: tcpTarget.port,
      tags: ["v2", "http"],
      check: { tcp: `127.0.0.1:${tcpTarget.port}`, interval: INTERVAL, timeout: "1s" },
    });
    await this.waitStatus("service:web-2", "passing");
    await this.dns.waitFor("web", ["web-1", "web-2"]);
    const ports = sorted((await this.dns.srv("web")).map((record) => record.port));
    check(show(ports) === show(sorted([httpTarget.port, tcpTarget.port])), `SRV ports ${show(ports)}`);
    check(show(await this.healthIds("web", { passing: true })) === show(["web-1", "web-2"]), "both passing");
    step("two instances of one service, TCP check passing, both in DNS");

    await tcpTarget.close();
    await this.waitStatus("service:web-2", "critical");
    await this.dns.waitFor("web", ["web-1"]);
    check(show(await this.healthIds("web", { passing: true })) === show(["web-1"]), "web-2 filtered");
    step("TCP port closed: critical, out of DNS");

    await tcpTarget.open(tcpTarget.port);
    await this.waitStatus("service:web-2", "passing");
    await this.dns.waitFor("web", ["web-1", "web-2"]);
    step("TCP port open again: passing, back in DNS");
  }

  async tags() {
    check(show(await this.catalogIds("web", { tag: "v1" })) === show(["web-1"]), "catalog tag v1");
    check(show(await this.catalogIds("web", { tag: "http" })) === show(["web-1", "web-2"]), "catalog tag http");
    check(show(await this.healthIds("web", { tag: "v2" })) === show(["web-2"]), "health tag v2");
    check(show(await this.healthIds("web", { tag: "v2", passing: true })) === show(["web-2"]), "health tag v2 passing");
    check(show(await this.healthIds("web", { tag: "none" })) === "[]", "health unknown tag");
    const services = await this.consul.catalog.services();
    check(show(sorted(services.web)) === show(["http", "v1", "v2"]), `catalog.services ${show(services)}`);
    check(show(await this.dns.targets("_web._v2")) === show(["web-2"]), "DNS tag query");
    step("tag filters in catalog, health and DNS");
  }

  async ttl_checks() {
    const agentCheck = this.consul.agent.check;
    await this.register({ name: "worker", id: "worker-1", address: "127.0.0.1", port: 7001, check: { ttl: "30s" } });
    check((await this.status("service:worker-1")) === "critical", "a new TTL check is critical");
    await this.dns.waitFor("worker", []);
    check(show(await this.healthIds("worker", { passing: true })) === "[]", "critical is not passing");

    await agentCheck.pass({ id: "service:worker-1", note: "all good" });
    let seen = (await this.checks())["service:worker-1"];
    check(seen.Status === "passing" && seen.Output === "all good", `after pass: ${show(seen)}`);
    await this.dns.waitFor("worker", ["worker-1"]);
    step("TTL pass with a note: passing, in DNS");

    await agentCheck.warn({ id: "service:worker-1", note: "slow" });
    seen = (await this.checks())["service:worker-1"];
    check(seen.Status === "warning" && seen.Output === "slow", `after warn: ${show(seen)}`);
    check(show(await this.healthIds("worker", { passing: true })) === "[]", "warning filtered by passing");
    await this.dns.waitFor("worker", []);
    step("TTL warn: warning, out of passing and DNS");

    await agentCheck.fail({ id: "service:worker-1", note: "broken" });
    seen = (await this.checks())["service:worker-1"];
    check(seen.Status === "critical" && seen.Output === "broken", `after fail: ${show(seen)}`);
    step("TTL fail: critical");

    await agentCheck.pass("service:worker-1");
    await this.dns.waitFor("worker", ["worker-1"]);

    // A TTL that runs out turns critical on its own.
    await this.register({ name: "ephemeral", id: "ephemeral-1", port: 7002, check: { ttl: "1s" } });
    await agentCheck.pass("service:ephemeral-1");
    await this.dns.waitFor("ephemeral", ["ephemeral-1"]);
    await this.waitStatus("service:ephemeral-1", "critical");
    const output = (await this.checks())["service:ephemeral-1"].Output;
    check(output.includes("TTL"), `output says the TTL expired: ${show(output)}`);
    await this.dns.waitFor("ephemeral", []);
    await this.deregister("ephemeral-1");
    step("TTL expiry: critical, out of DNS");

    // A TTL report on an HTTP check is Consul's 500; an unknown check 404.
    let error = await rejection("pass on an HTTP check", agentCheck.pass("service:web-1"));
    check(error.statusCode === 500, `status ${error.statusCode}: ${error.message}`);
    check(String(error.message).includes("does not have associated TTL"), `message: ${error.message}`);
    error = await rejection("pass on an unknown check", agentCheck.pass("no-such-check"));
    check(error.statusCode === 404, `status ${error.statusCode}: ${error.message}`);
    step("TTL report on a non-TTL check: 500 with Consul's text; unknown check: 404");
  }

  async check_endpoints() {
    const agentCheck = this.consul.agent.check;
    await agentCheck.register({ name: "worker-disk", ttl: "30s", notes: "disk space", serviceid: "worker-1" });
    const checks = await this.checks();
    check(checks["worker-disk"].Status === "critical", "new check critical");
    check(checks["worker-disk"].ServiceID === "worker-1", "attached to worker-1");
    check(checks["worker-disk"].Notes === "disk space", `notes: ${show(checks["worker-disk"])}`);
    check(checks["service:worker-1"].Status === "passing", "the other check kept its status");
    await this.dns.waitFor("worker", []);
    const byService = await this.consul.health.checks("worker");
    check(show(sorted(byService.map((c) => c.CheckID))) === show(["service:worker-1", "worker-disk"]), `health.checks: ${show(byService)}`);
    const critical = await this.consul.health.state("critical");
    check(critical.some((c) => c.CheckID === "worker-disk"), `health.state(critical): ${show(critical)}`);
    await agentCheck.pass("worker-disk");
    await this.dns.waitFor("worker", ["worker-1"]);
    await agentCheck.deregister("worker-disk");
    check(!("worker-disk" in (await this.checks())), "check gone");
    const error = await rejection("second check deregister", agentCheck.deregister("worker-disk"));
    check(error.statusCode === 404, `status ${error.statusCode}: ${error.message}`);
    step("check.register / health.checks / health.state / pass / check.deregister on a service");

    // `checks` (an array) sends Checks: IDs service:<id>:1 and :2.
    await this.register({ name: "batch", id: "batch-1", port: 7003, checks: [{ ttl: "30s" }, { ttl: "30s" }] });
    const ids = sorted(Object.keys(await this.checks()).filter((id) => id.startsWith("service:batch-1")));
    check(show(ids) === show(["service:batch-1:1", "service:batch-1:2"]), `check IDs ${show(ids)}`);
    await this.dns.waitFor("batch", []);
    await agentCheck.pass("service:batch-1:1");
    await agentCheck.pass("service:batch-1:2");
    await this.dns.waitFor("batch", ["batch-1"]);
    await this.deregister("batch-1");
    check(!Object.keys(await this.checks()).some((id) => id.startsWith("service:batch-1")), "checks went with it");
    step("checks array: IDs service:<id>:1 and :2, both must pass for DNS");

    // DeregisterCriticalServiceAfter reaps a service whose check stays critical.
    await this.register({
      name: "reaped",
      id: "reaped-1",
      port: 7004,
      check: { ttl: "30s", deregistercriticalserviceafter: "500ms" },
    });
    await eventually("reaped-1 to be deregistered", async () => {
      const services = await this.consul.agent.services();
      return [!("reaped-1" in services), Object.keys(services)];
    });
    step("DeregisterCriticalServiceAfter reaps a critical service");
  }

  async reregistration(httpTarget) {
    // Re-registering the same ID replaces it, without a duplicate, and its
    // check keeps its status (no flap out of DNS).
    const before = await this.status("service:web-1");
    await this.register(this.webService(httpTarget));
    check(before === "passing" && (await this.status("service:web-1")) === "passing", "status kept");
    const services = await this.consul.agent.services();
    const webs = sorted(Object.keys(services).filter((id) => id.startsWith("web-")));
    check(show(webs) === show(["web-1", "web-2"]), `no duplicate: ${show(services)}`);
    check(show(await this.dns.targets("web")) === show(["web-1", "web-2"]), "still in DNS");
    step("re-registration replaces and keeps check status");
  }

  async maintenance() {
    const service = this.consul.agent.service;
    await service.maintenance({ id: "web-1", enable: true, reason: "deploy" });
    const checks = await this.checks();
    const maintenance = checks["_service_maintenance:web-1"];
    check(maintenance !== undefined, `maintenance check: ${show(Object.keys(checks))}`);
    check(maintenance.Status === "critical", "maintenance check critical");
    check(maintenance.Notes === "deploy", `reason as notes: ${show(maintenance)}`);
    await this.dns.waitFor("web", ["web-2"]);
    check(show(await this.healthIds("web", { passing: true })) === show(["web-2"]), "drained from passing");
    check(show(await this.healthIds("web")) === show(["web-1", "web-2"]), "still listed");
    step("maintenance on: _service_maintenance check, out of DNS");

    await service.maintenance({ id: "web-1", enable: false });
    check(!("_service_maintenance:web-1" in (await this.checks())), "maintenance check gone");
    await this.dns.waitFor("web", ["web-1", "web-2"]);
    check(show(await this.healthIds("web", { passing: true })) === show(["web-1", "web-2"]), "back in passing");
    const error = await rejection("maintenance on an unknown ID", service.maintenance({ id: "nope", enable: true }));
    check(error.statusCode === 404, `status ${error.statusCode}: ${error.message}`);
    step("maintenance off: check gone, back in DNS; unknown ID: 404");
  }

  async blocking() {
    const agentCheck = this.consul.agent.check;
    // Quiet the registry: a fresh heartbeat keeps worker's 30s TTL far off.
    await agentCheck.pass("service:worker-1");
    let [response] = await this.consul.health.service({ service: "worker", ctx: withResponse() });
    const index = response.headers["x-consul-index"];
    const started = Date.now();
    let settled = false;
    const blocked = this.consul.health
      .service({ service: "worker", index, wait: "30s", ctx: withResponse() })
      .finally(() => {
        settled = true;
      });
    // Give the query a moment to reach roster and park (returning early
    // would also be correct; this only makes the wake-up the likely path).
    await sleep(200);
    check(!settled, "the blocking query returned before any change");
    await agentCheck.warn({ id: "service:worker-1", note: "busy" });
    const [woke, nodes] = await within("the blocked query to wake on the change", blocked);
    const took = (Date.now() - started) / 1000;
    const newIndex = woke.headers["x-consul-index"];
    check(BigInt(newIndex) > BigInt(index), `index moved: ${index} -> ${newIndex}`);
    const statuses = nodes[0].Checks.filter((c) => c.CheckID === "service:worker-1").map((c) => c.Status);
    check(show(statuses) === show(["warning"]), `the answer shows the change: ${show(statuses)}`);
    check(took < 25, `woke after ${took}s`);
    step(`blocking health.service woke on a change after ${took.toFixed(2)}s`);

    await agentCheck.pass("service:worker-1");
    [response] = await this.consul.health.service({ service: "worker", ctx: withResponse() });
    const quiet = response.headers["x-consul-index"];
    const start = Date.now();
    [response] = await within(
      "a blocking query with wait=1s",
      this.consul.health.service({ service: "worker", index: quiet, wait: "1s", ctx: withResponse() }),
    );
    const waited = (Date.now() - start) / 1000;
    check(response.headers["x-consul-index"] === quiet, `no change, same index: ${quiet} -> ${response.headers["x-consul-index"]}`);
    check(waited >= 0.9, `waited the full second: ${waited}s`);
    step(`blocking query timed out after ${waited.toFixed(2)}s with the same index`);
  }

  async watch() {
    // The client's Watch: blocking queries in a loop, a `change` per index.
    const watch = this.consul.watch({
      method: this.consul.health.service,
      options: { service: "worker", wait: "5s" },
      maxAttempts: 1,
    });
    const changes = [];
    const errors = [];
    watch.on("change", (data) => changes.push(data));
    watch.on("error", (error) => errors.push(String(error)));
    const statusOf = (data) =>
      data[0].Checks.filter((c) => c.CheckID === "service:worker-1").map((c) => c.Status)[0];
    try {
      await eventually("the first watch change", async () => [changes.length >= 1 || errors.length > 0, { changes, errors }]);
      check(errors.length === 0, `watch errors: ${show(errors)}`);
      check(statusOf(changes[0]) === "passing", `first change: ${show(changes[0])}`);
      await this.consul.agent.check.fail({ id: "service:worker-1", note: "watched" });
      await eventually("a watch change to critical", async () => {
        const last = changes[changes.length - 1];
        return [errors.length > 0 || statusOf(last) === "critical", { changes: changes.length, errors }];
      });
      check(errors.length === 0, `watch errors: ${show(errors)}`);
    } finally {
      watch.end();
    }
    await this.consul.agent.check.pass("service:worker-1");
    step(`watch on health.service: ${changes.length} changes, the last one critical`);
  }

  async unsupported() {
    // What roster does not serve fails loudly, with 501.
    let error = await rejection("agent.maintenance", this.consul.agent.maintenance(true));
    check(error.statusCode === 501, `agent.maintenance: ${error.statusCode} ${error.message}`);
    error = await rejection("kv.get", this.consul.kv.get("some/key"));
    check(error.statusCode === 501, `kv.get: ${error.statusCode} ${error.message}`);
    error = await rejection("catalog.nodes", this.consul.catalog.nodes());
    check(error.statusCode === 501, `catalog.nodes: ${error.statusCode} ${error.message}`);
    step("agent.maintenance, kv.get, catalog.nodes: 501");
  }

  async deregistration() {
    for (const id of ["web-1", "web-2", "worker-1"]) await this.deregister(id);
    const services = await this.consul.agent.services();
    check(show(services) === "{}", `nothing left: ${show(services)}`);
    check(show(await this.catalogIds("web")) === "[]", "catalog empty");
    check(show(await this.checks()) === "{}", "checks went with their services");
    check(show(await this.dns.targets("web")) === "[]", "web is gone from DNS");
    const error = await rejection("second deregister", this.consul.agent.service.deregister("web-1"));
    check(error.statusCode === 404, `status ${error.statusCode}: ${error.message}`);
    step("deregistration: gone from agent, catalog and DNS; second deregister 404");
  }

  async run() {
    await this.status_endpoints();
    await this.readme_example();
    await this.static_instance();
    const httpTarget = new HttpTarget();
    const tcpTarget = new TcpTarget();
    await httpTarget.start();
    await tcpTarget.open();
    try {
      await this.http_check(httpTarget);
      await this.tcp_check(httpTarget, tcpTarget);
      await this.tags();
      await this.ttl_checks();
      await this.check_endpoints();
      await this.reregistration(httpTarget);
      await this.maintenance();
      await this.blocking();
      await this.watch();
      await this.unsupported();
      await this.deregistration();
    } finally {
      httpTarget.close();
      if (tcpTarget.server.listening) await tcpTarget.close();
      this.consul.destroy();
    }
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      "http-port": { type: "string" },
      "dns-port": { type: "string" },
    },
  });
  const httpPort = Number(values["http-port"]);
  const dnsPort = Number(values["dns-port"]);
  check(httpPort > 0 && dnsPort > 0, "usage: node suite.js --http-port P --dns-port D");
  const manifest = require.resolve("consul/package.json");
  const version = require(manifest).version;
  console.log(`consul ${version} from ${path.dirname(manifest)} on node ${process.version}`);
  await new Suite(httpPort, dnsPort).run();
  console.log(`all passed with consul ${version}`);
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error && error.stack ? error.stack : error);
    process.exit(1);
  },
);
