// Shared by the Node tests. They run against a real `outboxhub serve` that tests/test_ops_js_client.py starts
// (`make test`), which passes in the environment:
//   OUTBOXHUB_WS_URL, OUTBOXHUB_OPS_URL   the hub
//   OUTBOXHUB_TOKEN                       every scope; OUTBOXHUB_LIMITED_TOKEN: publish:js.allowed.**, subscribe:**
//   OUTBOXHUB_JWT_SECRET                  the hub's HS256 secret, to mint short-lived tokens
//   OUTBOXHUB_SERVE_ARGV, OUTBOXHUB_SERVE_WS_URL, OUTBOXHUB_SERVE_OPS_URL, OUTBOXHUB_KILL_TOPIC
//                                         a second hub the restart test starts, SIGKILLs and starts again
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { WebSocket } from "ws";

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the Node tests through tests/test_ops_js_client.py`);
  return value;
}

export const env = {
  get url() { return need("OUTBOXHUB_WS_URL"); },
  get token() { return need("OUTBOXHUB_TOKEN"); },
  get limited() { return need("OUTBOXHUB_LIMITED_TOKEN"); },
  get secret() { return need("OUTBOXHUB_JWT_SECRET"); },
};

export const T = { timeout: 30_000 };
let unique = 0;
export const topicFor = (name) => `js.${name}.t${process.pid}x${++unique}`;

export async function waitFor(predicate, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A `ws` WebSocket that remembers its instances, so a test can cut the connection like a network would. */
export function trackedSockets() {
  const sockets = [];
  class Tracked extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  return { sockets, Tracked };
}

const b64url = (data) => Buffer.from(data).toString("base64url");

/** An HS256 JWT for the test hub: `exp` is `ttlS` seconds from now. */
export function mintToken({ sub = "js-test", scopes = ["publish:**", "subscribe:**"], ttlS = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, scopes, iat: now, exp: now + ttlS }));
  const sig = createHmac("sha256", env.secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** Start `outboxhub serve` (argv from OUTBOXHUB_SERVE_ARGV) and wait until its /healthz answers. */
export async function startHub() {
  const [cmd, ...args] = JSON.parse(need("OUTBOXHUB_SERVE_ARGV"));
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const healthz = `${need("OUTBOXHUB_SERVE_OPS_URL").replace(/\/$/, "")}/healthz`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`outboxhub serve exited with ${child.exitCode}:\n${stderr}`);
    try {
      if ((await fetch(healthz)).ok) return child;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`outboxhub serve did not answer ${healthz} in 30 s:\n${stderr}`);
    await sleep(50);
  }
}
