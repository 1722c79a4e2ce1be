/**
 * outboxhub.js: the browser (and Node) client of an outboxhub hub. A dependency-free ES module.
 *
 *   import { connect } from "/outboxhub.js";
 *   const hub = await connect("ws://127.0.0.1:8090/", { token });
 *   const { id, seq } = await hub.publish("orders.paid", { order: 42 }, { key: "42" });
 *   await hub.subscribe("orders.*", "billing", async (event, ctx) => { ... }); // ACK when it resolves
 *
 * The API is the legacy PromClient's (`new PromClient(url, token)`, connect, publish, subscribe,
 * unsubscribe, close), plus:
 *  - confirmed publish: `publish` resolves to {id, seq, duplicate} once the event is durably stored,
 *    and rejects with a HubError (`code`, `msg`) when the hub refuses it;
 *  - reconnect: after a lost connection the client reconnects with backoff, sends AUTH again, re-subscribes
 *    every subscription and re-sends unconfirmed publishes. Each publish carries an event id (a UUIDv7 is
 *    made when `opts.id` is absent), so a re-send can never store an event twice;
 *  - handlers: a handler's returned promise resolving ACKs the event, throwing NACKs it (with the error
 *    message as reason). Group-less subscriptions (group null) receive live events only and need no ACK.
 *
 * In Node (no global WebSocket before v22) pass the `ws` package: `connect(url, { token, WebSocket })`;
 * without it the client tries `import("ws")`.
 */

const OPEN = 1;
// The hub's error and close codes (docs/protocol.md). src/outboxhub/protocol/codes.py is their home;
// tests/test_error_codes.py holds these copies to it.
const CLOSE_AUTH_FAILED = 4001;
const CLOSE_TOKEN_EXPIRED = 4003;

/** Every error code an ERR from the hub can carry. */
export const ERROR_CODES = Object.freeze([
  "no_token",
  "jwt_invalid",
  "token_expired",
  "not_authenticated",
  "forbidden",
  "bad_request",
  "too_large",
  "rate_limited",
  "not_subscribed",
  "unavailable",
  "internal",
]);

/** An ERR reply from the hub, or a client-side failure (`closed`, `connection_lost`, `timeout`). */
export class HubError extends Error {
  constructor(code, msg) {
    super(`${code}: ${msg}`);
    this.name = "HubError";
    this.code = code;
    this.msg = msg;
  }
}

/** A time-ordered RFC 9562 UUIDv7 (crypto.getRandomValues works in insecure contexts too). */
export function uuidv7() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function subKey(topic, group) {
  return `${topic}::${group ?? ""}`;
}

function messageText(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  return String(data); // Node Buffer
}

export class OutboxHubClient {
  /**
   * @param {string} url  WebSocket URL of the hub, e.g. ws://127.0.0.1:8090/ (or /ws on the ops port)
   * @param {string | object} [tokenOrOptions]  a token, or options (see outboxhub.d.ts: ClientOptions)
   */
  constructor(url, tokenOrOptions) {
    const options =
      typeof tokenOrOptions === "string" || tokenOrOptions === undefined
        ? { token: tokenOrOptions }
        : { ...tokenOrOptions };
    this.url = url;
    this.options = options;
    this.reconnect = options.reconnect !== false;
    this.backoffInitialMs = options.backoff?.initialMs ?? 250;
    this.backoffMaxMs = options.backoff?.maxMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.handlers = new Map(); // PromClient's name: "topic::group" -> handler
    this.subs = new Map(); // "topic::group" -> {topic, group, opts}
    this.pending = new Map(); // rid -> {frame, resolve, reject, resend, generatedId}
    this._state = "idle";
    this._ws = undefined;
    this._rid = 0;
    this._attempt = 0;
    this._timer = undefined;
    this._opening = undefined; // promise of the current open attempt
    this._waiters = []; // connect() callers waiting for the next open
  }

  /** idle | connecting | open | reconnecting | closed */
  get state() {
    return this._state;
  }

  _setState(state, detail) {
    if (this._state === state) return;
    this._state = state;
    try {
      this.options.onState?.(state, detail);
    } catch (e) {
      this._report(e);
    }
  }

  _report(error) {
    if (this.options.onError) this.options.onError(error);
    else if (typeof console !== "undefined") console.warn("outboxhub:", error);
  }

  /** Open the connection and authenticate. Resolves once AUTH is accepted; safe to call repeatedly. */
  connect() {
    if (this._state === "open") return Promise.resolve();
    if (this._state === "closed") return Promise.reject(new HubError("closed", "the client was closed"));
    if (this._state === "reconnecting") {
      return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    }
    if (!this._opening) {
      this._setState("connecting");
      this._opening = this._open().then(
        () => {
          this._opening = undefined;
        },
        (error) => {
          this._opening = undefined;
          if (this._state === "connecting") this._setState("idle", error);
          throw error;
        },
      );
    }
    return this._opening;
  }

  async _token() {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  async _socketClass() {
    if (this.options.WebSocket) return this.options.WebSocket;
    if (typeof globalThis.WebSocket !== "undefined") return globalThis.WebSocket;
    const mod = await import("ws");
    return mod.WebSocket ?? mod.default;
  }

  /** One connection attempt: socket, AUTH, then re-subscribe and re-send what is pending. */
  async _open() {
    const [WS, token] = await Promise.all([this._socketClass(), this._token()]);
    if (this._state === "closed") throw new HubError("closed", "the client was closed");
    await new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WS(this.url);
      this._ws = ws;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try {
          ws.close();
        } catch {
          /* already closed */
        }
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new HubError("timeout", `no AUTH reply within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
      ws.onopen = () => {
        const rid = this._nextRid();
        this.pending.set(rid, {
          frame: null,
          resend: false,
          resolve: () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve();
          },
          reject: (error) => fail(error),
        });
        ws.send(JSON.stringify({ op: "AUTH", rid, token }));
      };
      ws.onmessage = (ev) => this._onMessage(ws, ev);
      ws.onerror = () => fail(new HubError("connection_lost", `cannot connect to ${this.url}`));
      ws.onclose = (ev) => {
        fail(new HubError("connection_lost", `connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`));
        this._onClose(ws, ev);
      };
    });
    this._attempt = 0;
    this._setState("open");
    this._resume();
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w.resolve();
  }

  /** After (re)connecting: subscribe again, then re-send requests that were never answered, in order. */
  _resume() {
    const resent = new Set();
    for (const sub of this.subs.values()) {
      const frame = { op: "SUBSCRIBE", topic: sub.topic };
      if (sub.group != null) frame.group = sub.group;
      if (sub.opts) frame.opts = sub.opts;
      const waiting = [...this.pending.entries()].find(
        ([, p]) => p.frame?.op === "SUBSCRIBE" && subKey(p.frame.topic, p.frame.group) === subKey(sub.topic, sub.group),
      );
      if (waiting) {
        resent.add(waiting[0]);
        this._send({ ...waiting[1].frame, rid: waiting[0] });
      } else {
        this._request(frame, { resend: true }).catch((error) => this._report(error));
      }
    }
    for (const [rid, p] of [...this.pending.entries()].sort((a, b) => a[0] - b[0])) {
      if (p.frame && !resent.has(rid) && p.frame.op !== "SUBSCRIBE") this._send({ ...p.frame, rid });
    }
  }

  _nextRid() {
    this._rid += 1;
    return this._rid;
  }

  _send(frame) {
    const ws = this._ws;
    if (this._state === "open" && ws && ws.readyState === OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Send a request with a rid; the promise settles with its reply. `resend`: send again after reconnect. */
  _request(frame, { resend, generatedId = false }) {
    return new Promise((resolve, reject) => {
      const rid = this._nextRid();
      this.pending.set(rid, { frame, resolve, reject, resend, generatedId });
      this._send({ ...frame, rid });
    });
  }

  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
    let msg;
    try {
      msg = JSON.parse(messageText(ev.data));
    } catch (error) {
      this._report(new HubError("bad_frame", `unreadable frame from the hub: ${error}`));
      return;
    }
    if (msg.op === "EVENT") {
      this._onEvent(ws, msg);
      return;
    }
    const p = msg.rid === undefined ? undefined : this.pending.get(msg.rid);
    if (!p) {
      if (msg.op === "ERR") this._report(new HubError(msg.code, msg.msg));
      return;
    }
    this.pending.delete(msg.rid);
    if (msg.op === "OK") {
      if (p.frame?.op === "PUBLISH") {
        // A publish re-sent after a reconnect may find its own first attempt stored: with an id we made
        // up ourselves (nobody else can know it) that is not a duplicate from the caller's point of view.
        p.resolve({ id: msg.id, seq: msg.seq, duplicate: Boolean(msg.duplicate) && !p.generatedId });
      } else {
        const { op: _op, rid: _rid, ...rest } = msg;
        p.resolve(rest);
      }
    } else if (msg.op === "ERR") {
      if (p.frame?.op === "SUBSCRIBE") this.subs.delete(subKey(p.frame.topic, p.frame.group));
      if (p.frame?.op === "SUBSCRIBE") this.handlers.delete(subKey(p.frame.topic, p.frame.group));
      p.reject(new HubError(msg.code, msg.msg));
    }
  }

  _onEvent(ws, msg) {
    const group = msg.group ?? null;
    const handler = this.handlers.get(subKey(msg.topic, group));
    if (!handler) return;
    const settle = (op, extra) => {
      if (group === null || ws !== this._ws || ws.readyState !== OPEN) return; // redelivered after reconnect
      ws.send(JSON.stringify({ op, topic: msg.topic, group, id: msg.event.id, ...extra }));
    };
    let result;
    try {
      result = handler(msg.event, msg.ctx ?? { attempt: 1, redelivered: false });
    } catch (error) {
      settle("NACK", { reason: String(error?.message ?? error) });
      return;
    }
    Promise.resolve(result).then(
      () => settle("ACK"),
      (error) => settle("NACK", { reason: String(error?.message ?? error) }),
    );
  }

  _onClose(ws, ev) {
    if (ws !== this._ws) return;
    this._ws = undefined;
    if (this._state === "closed") return;
    const authFailed = ev.code === CLOSE_AUTH_FAILED || ev.code === CLOSE_TOKEN_EXPIRED;
    const canRetry = typeof this.options.token === "function" || !authFailed;
    const established = this._state === "open" || this._state === "reconnecting";
    const willRetry = this.reconnect && canRetry && established;
    // Requests that cannot be re-sent (AUTH, UNSUBSCRIBE) end now; publishes and subscribes wait.
    for (const [rid, p] of [...this.pending.entries()]) {
      if (p.resend && willRetry) continue;
      this.pending.delete(rid);
      if (p.frame?.op === "UNSUBSCRIBE") p.resolve({});
      else p.reject(new HubError("connection_lost", `connection closed (${ev.code})`));
    }
    // A live connection dropped: reconnect (or give up). A failed attempt (first connect or a reconnect)
    // is handled where that attempt was started.
    if (this._state !== "open") return;
    if (willRetry) {
      this._scheduleReconnect(ev);
    } else {
      this._fail(new HubError(authFailed ? "auth_failed" : "connection_lost", `connection closed (${ev.code})`));
    }
  }

  _scheduleReconnect(reason) {
    this._setState("reconnecting", reason);
    this._attempt += 1;
    const base = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** (this._attempt - 1));
    const delay = base / 2 + Math.random() * (base / 2);
    this._timer = setTimeout(() => {
      this._timer = undefined;
      if (this._state !== "reconnecting") return;
      this._open().catch((error) => {
        if (this._state !== "reconnecting") return;
        const refused = ["jwt_invalid", "no_token", "token_expired"].includes(error.code);
        if (refused && (error.code !== "token_expired" || typeof this.options.token !== "function")) {
          this._fail(error); // the same token would be refused again
        } else {
          this._report(error);
          this._scheduleReconnect(error);
        }
      });
    }, delay);
  }

  _fail(error) {
    this._setState("closed", error);
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    for (const w of this._waiters) w.reject(error);
    this._waiters = [];
  }

  /**
   * Publish one event and wait until the hub has stored it durably.
   * @returns {Promise<{id: string, seq: number, duplicate: boolean}>}
   */
  async publish(topic, payload, opts) {
    if (this._state === "idle") await this.connect();
    if (this._state === "closed") throw new HubError("closed", "the client was closed");
    const o = { ...(opts ?? {}) };
    const generated = o.id === undefined;
    if (generated) o.id = uuidv7();
    return this._request({ op: "PUBLISH", topic, payload, opts: o }, { resend: true, generatedId: generated });
  }

  /**
   * Subscribe `handler` to `topic` (a pattern) in consumer `group` (null: live events only, no ACKs).
   * Resolves when the hub confirms; the subscription is renewed after every reconnect.
   */
  async subscribe(topic, group, handler, opts) {
    if (this._state === "idle") await this.connect();
    if (this._state === "closed") throw new HubError("closed", "the client was closed");
    const g = group ?? null;
    const key = subKey(topic, g);
    this.handlers.set(key, handler);
    this.subs.set(key, { topic, group: g, opts });
    const frame = { op: "SUBSCRIBE", topic };
    if (g !== null) frame.group = g;
    if (opts) frame.opts = opts;
    await this._request(frame, { resend: true });
  }

  /** End the subscription (topic, group). */
  async unsubscribe(topic, group) {
    const g = group ?? null;
    const key = subKey(topic, g);
    this.handlers.delete(key);
    this.subs.delete(key);
    if (this._state !== "open") return;
    const frame = { op: "UNSUBSCRIBE", topic };
    if (g !== null) frame.group = g;
    try {
      await this._request(frame, { resend: false });
    } catch (error) {
      if (error.code !== "not_subscribed" && error.code !== "connection_lost") throw error;
    }
  }

  /** Close the connection for good: no reconnect; unanswered requests reject with code `closed`. */
  close() {
    if (this._timer !== undefined) clearTimeout(this._timer);
    this._timer = undefined;
    const ws = this._ws;
    this._ws = undefined;
    this._fail(new HubError("closed", "the client was closed"));
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closed */
      }
    }
  }
}

/** The legacy PromClient protocol's name for the client. */
export { OutboxHubClient as PromClient };

/** Create a client and connect it. */
export async function connect(url, tokenOrOptions) {
  const client = new OutboxHubClient(url, tokenOrOptions);
  await client.connect();
  return client;
}
