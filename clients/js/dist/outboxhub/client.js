/**
 * OutboxHubClient: one WebSocket to a hub, with confirmed pipelined publishes, subscriptions (handler or
 * async iterator), reconnect with re-AUTH, re-SUBSCRIBE and ordered re-send, and token refresh.
 */
import { CLOSE_AUTH_FAILED, CLOSE_TOKEN_EXPIRED } from "./codes.js";
import { AuthFailed, ClientClosed, HubConnectionError, HubError, RateLimited, TokenExpired, errorFromCode, } from "./errors.js";
import { MessageStream } from "./messages.js";
import { getToken, refreshDelayMs } from "./token.js";
import { topicName } from "./topic.js";
import { uuidv7 } from "./uuid.js";
import { backoffDelay, decoder, handlerDelivery, messageText, reasonOf, retried, socketClass, streamDelivery, subKey, subscribeFrame, } from "./wire.js";
const OPEN = 1;
const MAX_TIMER_MS = 2 ** 31 - 1;
export class OutboxHubClient {
    url;
    options;
    /** The handler of each subscription, by "topic::group" (the legacy PromClient's field). */
    handlers = new Map();
    /** The token's subject and expiry (epoch seconds) from the last accepted AUTH. */
    subject;
    exp;
    /** Reconnects made, and tokens refreshed on an open connection. */
    reconnects = 0;
    tokenRefreshes = 0;
    #subs = new Map();
    #pending = new Map(); // insertion order is rid order
    #queue = []; // not yet sent, in rid order
    #inFlight = 0; // publishes sent and not yet answered
    #held = false; // a publish was refused for now: later ones wait, then all go out again in order
    #holdTimer;
    #holdAttempt = 0;
    #state = "idle";
    #ws;
    #rid = 0;
    #attempt = 0;
    #reconnectTimer;
    #refreshTimer;
    #opening;
    #waiters = [];
    #busy = 0; // handlers running and stream messages taken but not settled
    #closing;
    #drained;
    /**
     * @param url  WebSocket URL of the hub, e.g. ws://127.0.0.1:8090/ (or /ws on the ops port)
     * @param tokenOrOptions  a token, or {@link ClientOptions}
     */
    constructor(url, tokenOrOptions) {
        this.url = url;
        this.options =
            typeof tokenOrOptions === "string" || tokenOrOptions === undefined
                ? { token: tokenOrOptions }
                : { ...tokenOrOptions };
    }
    /** idle | connecting | open | reconnecting | closing | closed */
    get state() {
        return this.#closing && this.#state !== "closed" ? "closing" : this.#state;
    }
    #setState(state, detail) {
        if (this.#state === state)
            return;
        this.#state = state;
        try {
            this.options.onState?.(state, detail);
        }
        catch (e) {
            this.#report(e);
        }
    }
    #report(error) {
        if (this.options.onError)
            this.options.onError(error);
        else if (typeof console !== "undefined")
            console.warn("outboxhub:", error);
    }
    /** Open the connection and authenticate. Resolves once AUTH is accepted; safe to call repeatedly. */
    connect() {
        if (this.#closing || this.#state === "closed")
            return Promise.reject(new ClientClosed("the client was closed"));
        if (this.#state === "open")
            return Promise.resolve();
        if (this.#state === "reconnecting") {
            return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
        }
        if (!this.#opening) {
            this.#setState("connecting");
            this.#opening = this.#open().then(() => {
                this.#opening = undefined;
            }, (error) => {
                this.#opening = undefined;
                if (this.#state === "connecting")
                    this.#setState("idle", error);
                throw error;
            });
        }
        return this.#opening;
    }
    /** One connection attempt: socket, AUTH, then re-subscribe and re-send what is pending. */
    async #open() {
        const [WS, token] = await Promise.all([socketClass(this.options), getToken(this.options.token)]);
        if (this.#state === "closed")
            throw new ClientClosed("the client was closed");
        const timeoutMs = this.options.connectTimeoutMs ?? 10_000;
        await new Promise((resolve, reject) => {
            let settled = false;
            const ws = new WS(this.url);
            this.#ws = ws;
            const fail = (error) => {
                if (settled)
                    return;
                settled = true;
                clearTimeout(timer);
                try {
                    ws.close();
                }
                catch {
                    /* already closed */
                }
                reject(error);
            };
            const timer = setTimeout(() => fail(new HubConnectionError(`no AUTH reply from ${this.url} within ${timeoutMs} ms`)), timeoutMs);
            ws.onopen = () => {
                this.#sendAuth(ws, token).then(() => {
                    if (settled)
                        return;
                    settled = true;
                    clearTimeout(timer);
                    resolve();
                }, fail);
            };
            ws.onmessage = (ev) => this.#onMessage(ws, ev);
            ws.onerror = () => fail(new HubConnectionError(`cannot connect to ${this.url}`));
            ws.onclose = (ev) => {
                fail(new HubConnectionError(`connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`));
                this.#onClose(ws, ev);
            };
        });
        if (this.#attempt > 0)
            this.reconnects += 1;
        this.#attempt = 0;
        this.#setState("open");
        this.#resume();
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters)
            w.resolve();
    }
    #sendAuth(ws, token) {
        return new Promise((resolve, reject) => {
            const rid = this.#nextRid();
            const frame = { op: "AUTH", token };
            this.#pending.set(rid, { rid, frame, resolve, reject, resend: false, sent: true, generatedId: false });
            ws.send(JSON.stringify({ ...frame, rid }));
        });
    }
    /** After (re)connecting: subscribe again, then send what waits (unconfirmed publishes first), in order. */
    #resume() {
        this.#held = false;
        clearTimeout(this.#holdTimer);
        this.#holdTimer = undefined;
        this.#inFlight = 0;
        for (const sub of this.#subs.values()) {
            const key = subKey(sub.topic, sub.group);
            const waiting = [...this.#pending.values()].find((p) => p.frame.op === "SUBSCRIBE" && subKey(p.frame.topic, p.frame.group ?? null) === key);
            if (waiting) {
                this.#transmit(waiting);
            }
            else {
                this.#request(subscribeFrame(sub), { resend: true }).catch((error) => this.#report(error));
            }
        }
        this.#requeue();
    }
    #requeue() {
        this.#queue = [...this.#pending.values()].filter((p) => !p.sent);
        this.#flush();
    }
    #nextRid() {
        this.#rid += 1;
        return this.#rid;
    }
    #canSend() {
        return this.#state === "open" && this.#ws !== undefined && this.#ws.readyState === OPEN;
    }
    #transmit(p) {
        this.#ws.send(JSON.stringify({ ...p.frame, rid: p.rid }));
        p.sent = true;
        if (p.frame.op === "PUBLISH")
            this.#inFlight += 1;
    }
    /** Send what waits, in rid order; publishes stop at `maxInFlight` and while held back. */
    #flush() {
        if (!this.#canSend())
            return;
        const maxInFlight = this.options.maxInFlight ?? 1024;
        let i = 0;
        for (; i < this.#queue.length; i++) {
            const p = this.#queue[i];
            if (p.sent || !this.#pending.has(p.rid))
                continue;
            if (p.frame.op === "PUBLISH" && (this.#held || this.#inFlight >= maxInFlight))
                break;
            this.#transmit(p);
        }
        this.#queue.splice(0, i);
    }
    /** Send a request with a rid; the promise settles with its reply. `resend`: send again after a reconnect. */
    #request(frame, { resend, generatedId = false }) {
        return new Promise((resolve, reject) => {
            const p = { rid: this.#nextRid(), frame, resolve, reject, resend, sent: false, generatedId };
            this.#pending.set(p.rid, p);
            this.#queue.push(p);
            this.#flush();
        });
    }
    #onMessage(ws, ev) {
        if (ws !== this.#ws)
            return;
        let msg;
        try {
            msg = JSON.parse(messageText(ev.data));
        }
        catch (error) {
            this.#report(new HubError("bad_frame", `unreadable frame from the hub: ${reasonOf(error)}`));
            return;
        }
        if (msg.op === "EVENT") {
            this.#onEvent(ws, msg);
            return;
        }
        const p = typeof msg.rid === "number" ? this.#pending.get(msg.rid) : undefined;
        if (!p) {
            if (msg.op === "ERR")
                this.#report(errorFromCode(String(msg.code), String(msg.msg), msg));
            return;
        }
        const op = p.frame.op;
        if (op === "PUBLISH")
            this.#inFlight -= 1;
        if (msg.op === "OK") {
            this.#pending.delete(p.rid);
            const { op: _op, rid: _rid, ...rest } = msg;
            if (op === "PUBLISH") {
                this.#holdAttempt = 0;
                // A re-sent publish may find its own first attempt stored: with an id nobody else can know,
                // that is not a duplicate from the caller's point of view.
                p.resolve({ id: msg.id, seq: msg.seq, duplicate: Boolean(msg.duplicate) && !p.generatedId });
            }
            else {
                if (op === "AUTH")
                    this.#onAuthOk(ws, msg);
                p.resolve(rest);
            }
        }
        else if (msg.op === "ERR") {
            const error = errorFromCode(String(msg.code), String(msg.msg), msg);
            if (op === "PUBLISH" && retried(error, this.options)) {
                p.sent = false;
                this.#hold(error);
            }
            else {
                this.#pending.delete(p.rid);
                if (op === "SUBSCRIBE")
                    this.#dropSub(subKey(p.frame.topic, p.frame.group ?? null), error);
                p.reject(error);
            }
        }
        if (op === "PUBLISH") {
            this.#release();
            this.#flush();
            this.#checkDrained();
        }
    }
    /** Hold back publishes after a refusal; after the pause and once every reply due is in, re-send in order. */
    #hold(error) {
        if (this.#held)
            return;
        this.#held = true;
        this.#holdAttempt += 1;
        const after = error instanceof RateLimited ? error.retryAfterMs : undefined;
        this.#holdTimer = setTimeout(() => {
            this.#holdTimer = undefined;
            this.#release();
        }, after ?? backoffDelay(this.options, this.#holdAttempt));
    }
    #release() {
        if (!this.#held || this.#holdTimer !== undefined || this.#inFlight > 0)
            return;
        this.#held = false;
        this.#requeue();
    }
    #onAuthOk(ws, msg) {
        this.subject = typeof msg.sub === "string" ? msg.sub : null;
        this.exp = typeof msg.exp === "number" ? msg.exp : undefined;
        clearTimeout(this.#refreshTimer);
        this.#refreshTimer = undefined;
        if (typeof this.options.token !== "function" || this.exp === undefined)
            return;
        const delay = Math.min(MAX_TIMER_MS, refreshDelayMs(this.exp, Date.now()));
        this.#refreshTimer = setTimeout(() => void this.#refresh(ws), delay);
    }
    /** Re-AUTH on the open connection with a fresh token from the provider, before the current one expires. */
    async #refresh(ws) {
        try {
            const token = await getToken(this.options.token);
            if (ws !== this.#ws || !this.#canSend())
                return;
            await this.#sendAuth(ws, token);
            this.tokenRefreshes += 1;
        }
        catch (error) {
            this.#report(error); // a refused re-AUTH closes the connection; the reconnect asks again
        }
    }
    #onEvent(ws, msg) {
        if (this.#closing)
            return; // draining: the hub redelivers
        const group = msg.group ?? null;
        const sub = this.#subs.get(subKey(msg.topic, group));
        if (!sub)
            return;
        const event = msg.event;
        const settle = (op, extra) => {
            if (group === null || ws !== this.#ws || ws.readyState !== OPEN)
                return; // redelivered after reconnect
            // seq names the delivery when two topics under the pattern carry the same id
            ws.send(JSON.stringify({ op, topic: msg.topic, group, id: event.id, seq: event.seq, ...extra }));
        };
        sub.deliver(event, msg.ctx ?? { attempt: 1, redelivered: false }, settle);
    }
    /** Counts running handlers and taken, unsettled messages, for close()'s drain. */
    #work = {
        enter: () => {
            this.#busy += 1;
        },
        leave: () => {
            this.#busy -= 1;
            this.#checkDrained();
        },
    };
    #onClose(ws, ev) {
        if (ws !== this.#ws)
            return;
        this.#ws = undefined;
        clearTimeout(this.#refreshTimer);
        if (this.#state === "closed")
            return;
        const authFailed = ev.code === CLOSE_AUTH_FAILED || ev.code === CLOSE_TOKEN_EXPIRED;
        const canRetry = typeof this.options.token === "function" || !authFailed;
        const established = this.#state === "open" || this.#state === "reconnecting";
        const willRetry = this.options.reconnect !== false && canRetry && established;
        this.#inFlight = 0;
        // Requests that cannot be re-sent (AUTH, UNSUBSCRIBE) end now; publishes and subscribes wait.
        for (const p of [...this.#pending.values()]) {
            if (p.resend && willRetry) {
                p.sent = false;
                continue;
            }
            this.#pending.delete(p.rid);
            if (p.frame.op === "UNSUBSCRIBE")
                p.resolve({});
            else
                p.reject(new HubConnectionError(`connection closed (${ev.code})`));
        }
        // A live connection dropped: reconnect (or give up). A failed attempt is handled where it was started.
        if (this.#state !== "open")
            return;
        if (willRetry) {
            this.#scheduleReconnect(ev);
        }
        else if (authFailed) {
            const code = ev.code === CLOSE_TOKEN_EXPIRED ? "token_expired" : "jwt_invalid";
            const Cls = ev.code === CLOSE_TOKEN_EXPIRED ? TokenExpired : AuthFailed;
            this.#fail(new Cls(code, `the hub closed the connection (${ev.code}); use a token provider to refresh`));
        }
        else {
            this.#fail(new HubConnectionError(`connection closed (${ev.code})`));
        }
    }
    #scheduleReconnect(reason) {
        this.#setState("reconnecting", reason);
        this.#attempt += 1;
        this.#reconnectTimer = setTimeout(() => {
            this.#reconnectTimer = undefined;
            if (this.#state !== "reconnecting")
                return;
            this.#open().catch((error) => {
                if (this.#state !== "reconnecting")
                    return;
                // A refused token would be refused again, unless a provider can make a fresh one.
                const refused = error instanceof AuthFailed;
                if (refused && !(error instanceof TokenExpired && typeof this.options.token === "function")) {
                    this.#fail(error);
                }
                else {
                    this.#report(error);
                    this.#scheduleReconnect(error);
                }
            });
        }, backoffDelay(this.options, this.#attempt));
    }
    #fail(error) {
        clearTimeout(this.#reconnectTimer);
        clearTimeout(this.#refreshTimer);
        clearTimeout(this.#holdTimer);
        this.#reconnectTimer = this.#refreshTimer = this.#holdTimer = undefined;
        this.#setState("closed", error);
        for (const p of this.#pending.values())
            p.reject(error);
        this.#pending.clear();
        this.#queue = [];
        for (const w of this.#waiters)
            w.reject(error);
        this.#waiters = [];
        for (const sub of this.#subs.values())
            sub.stream?.end(error instanceof ClientClosed ? undefined : error);
        this.#drained?.();
    }
    async #ready() {
        if (this.#closing)
            throw new ClientClosed("the client is closing");
        if (this.#state === "idle")
            await this.connect();
        if (this.#state === "closed")
            throw new ClientClosed("the client was closed");
    }
    /**
     * Publish one event and wait until the hub has stored it durably. Publishes are pipelined and go out in
     * call order; the event id (a UUIDv7 unless `opts.id`) makes re-sends after a reconnect harmless.
     */
    publish(topic, payload, opts) {
        if (this.#closing)
            return Promise.reject(new ClientClosed("the client is closing"));
        if (this.#state === "idle")
            return this.connect().then(() => this.publish(topic, payload, opts));
        if (this.#state === "closed")
            return Promise.reject(new ClientClosed("the client was closed"));
        const o = { ...opts };
        const generated = o.id === undefined;
        if (generated)
            o.id = uuidv7();
        const frame = { op: "PUBLISH", topic: topicName(topic), payload, opts: o };
        return this.#request(frame, { resend: true, generatedId: generated });
    }
    async #addSub(sub) {
        const key = subKey(sub.topic, sub.group);
        this.#subs.get(key)?.stream?.end();
        this.#subs.set(key, sub);
        await this.#request(subscribeFrame(sub), { resend: true });
    }
    #dropSub(key, error) {
        const sub = this.#subs.get(key);
        this.#subs.delete(key);
        this.handlers.delete(key);
        sub?.stream?.end(error);
    }
    /**
     * Subscribe `handler` to `topic` (a pattern or a typed topic) in consumer `group` (null: live events only,
     * no ACKs). The handler resolving ACKs the event, throwing NACKs it with the error message as reason.
     * Resolves when the hub confirms; the subscription is renewed after every reconnect.
     */
    async subscribe(topic, group, handler, opts) {
        await this.#ready();
        const name = topicName(topic);
        const g = group ?? null;
        const decode = decoder(topic);
        this.handlers.set(subKey(name, g), handler);
        const deliver = handlerDelivery(handler, decode, this.#work);
        await this.#addSub({ topic: name, group: g, opts, deliver });
        return { topic: name, group: g, unsubscribe: () => this.unsubscribe(name, g) };
    }
    /**
     * Subscribe and receive the messages as an async iterator; settle each with `msg.ack()` / `msg.nack()`.
     * Resolves once the hub confirms the subscription.
     */
    async messages(topic, group, opts) {
        await this.#ready();
        const name = topicName(topic);
        const g = group ?? null;
        const decode = decoder(topic);
        const stream = new MessageStream(name, g, () => this.unsubscribe(name, g));
        const deliver = streamDelivery(stream, decode, this.#work);
        await this.#addSub({ topic: name, group: g, opts, deliver, stream: stream });
        return stream;
    }
    /** End the subscription (topic, group). */
    async unsubscribe(topic, group) {
        const name = topicName(topic);
        const g = group ?? null;
        this.#dropSub(subKey(name, g));
        if (this.#state !== "open")
            return;
        const frame = { op: "UNSUBSCRIBE", topic: name };
        if (g !== null)
            frame.group = g;
        try {
            await this.#request(frame, { resend: false });
        }
        catch (error) {
            const code = error.code;
            if (code !== "not_subscribed" && code !== "connection" && code !== "closed")
                throw error;
        }
    }
    #hasWork() {
        return this.#busy > 0 || [...this.#pending.values()].some((p) => p.frame.op === "PUBLISH");
    }
    #checkDrained() {
        if (this.#drained && !this.#hasWork())
            this.#drained();
    }
    /**
     * Close for good. By default it drains first: no new work is taken, and it waits (up to `drainTimeoutMs`)
     * until every publish is confirmed and every running handler (and taken message) is settled. Then the
     * socket closes and whatever still waits rejects with `ClientClosed`. `{ drain: false }` closes at once.
     */
    close(options) {
        if (this.#state === "closed")
            return Promise.resolve();
        if (this.#closing)
            return this.#closing;
        const live = this.#state === "open" || this.#state === "reconnecting";
        if (options?.drain === false || !live || !this.#hasWork()) {
            this.#shutdown();
            return Promise.resolve();
        }
        this.#closing = new Promise((resolve) => {
            const timer = setTimeout(() => this.#drained?.(), this.options.drainTimeoutMs ?? 10_000);
            this.#drained = () => {
                this.#drained = undefined;
                clearTimeout(timer);
                this.#shutdown();
                resolve();
            };
        });
        this.options.onState?.("closing");
        return this.#closing;
    }
    #shutdown() {
        const ws = this.#ws;
        this.#ws = undefined;
        this.#fail(new ClientClosed("the client was closed"));
        try {
            ws?.close(1000, "client closed");
        }
        catch {
            /* already closed */
        }
    }
}
/** Create a client and connect it. */
export async function connect(url, tokenOrOptions) {
    const client = new OutboxHubClient(url, tokenOrOptions);
    await client.connect();
    return client;
}
