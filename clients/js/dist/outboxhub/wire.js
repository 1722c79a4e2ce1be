/** Pieces of the client's subscriptions and frames that need none of its state. */
import { HubConnectionError, RateLimited } from "./errors.js";
import { Message } from "./messages.js";
export function subKey(topic, group) {
    return `${topic}::${group ?? ""}`;
}
export function messageText(data) {
    if (typeof data === "string")
        return data;
    if (data instanceof ArrayBuffer)
        return new TextDecoder().decode(data);
    if (ArrayBuffer.isView(data))
        return new TextDecoder().decode(data); // Node Buffer
    return String(data);
}
export function reasonOf(error) {
    return String(error?.message ?? error);
}
/** The decoder of a typed topic's payloads (identity for a plain pattern). */
export function decoder(t) {
    const decode = typeof t === "string" ? undefined : t.decode;
    if (!decode)
        return (event) => event;
    return (event) => {
        try {
            return { ...event, payload: decode(event.payload) };
        }
        catch (error) {
            throw new TypeError(`payload of ${event.topic} (event ${event.id}) does not decode: ${reasonOf(error)}`);
        }
    };
}
/** The SUBSCRIBE frame of a subscription. */
export function subscribeFrame(sub) {
    const frame = { op: "SUBSCRIBE", topic: sub.topic };
    if (sub.group !== null)
        frame.group = sub.group;
    if (sub.opts)
        frame.opts = sub.opts;
    return frame;
}
/**
 * Run `handler` per delivery: resolving ACKs, throwing NACKs; a payload that does not decode is
 * dead-lettered at once (a terminal NACK). `ctx.extend()` sends EXTEND for a long-running handler.
 */
export function handlerDelivery(handler, decode, work) {
    return (raw, ctx, settle) => {
        const nack = (error) => settle("NACK", { reason: reasonOf(error) });
        let event;
        try {
            event = decode(raw);
        }
        catch (error) {
            settle("NACK", { reason: reasonOf(error), terminal: true }); // fails the same way every time
            return;
        }
        const handlerCtx = { ...ctx, extend: () => settle("EXTEND") };
        work.enter();
        try {
            Promise.resolve(handler(event, handlerCtx))
                .then(() => settle("ACK"), nack)
                .finally(() => work.leave());
        }
        catch (error) {
            nack(error);
            work.leave();
        }
    };
}
/** Hand each delivery to `stream` as a Message; a payload that does not decode is dead-lettered instead. */
export function streamDelivery(stream, decode, work) {
    return (raw, ctx, settle) => {
        let event;
        try {
            event = decode(raw);
        }
        catch (error) {
            settle("NACK", { reason: reasonOf(error), terminal: true }); // fails the same way every time
            return;
        }
        work.enter();
        stream.push(new Message(event, ctx, stream.group, settle, () => work.leave()));
    };
}
/** Codes a publish is refused with that had no effect, so it is re-sent (in order) after a pause. */
const RETRIED = new Set(["unavailable", "not_authenticated"]);
/** Whether a publish refused with `error` is held back and re-sent (it had no effect). */
export function retried(error, options) {
    if (error instanceof RateLimited)
        return options.retryRateLimited !== false;
    return RETRIED.has(error.code);
}
/** A pause of the backoff for the `attempt`-th try (1, 2, …): doubling up to the maximum, with jitter. */
export function backoffDelay(options, attempt) {
    const initial = options.backoff?.initialMs ?? 250;
    const max = options.backoff?.maxMs ?? 10_000;
    const base = Math.min(max, initial * 2 ** (attempt - 1));
    return base / 2 + Math.random() * (base / 2);
}
/** The WebSocket class: the option, the global one, else the `ws` package. */
export async function socketClass(options) {
    if (options.WebSocket)
        return options.WebSocket;
    const global = globalThis.WebSocket;
    if (global !== undefined)
        return global;
    const name = "ws"; // a variable, so bundlers for the browser leave it alone
    try {
        const mod = await import(name);
        return (mod.WebSocket ?? mod.default);
    }
    catch {
        throw new HubConnectionError("no global WebSocket (Node.js < 22): install the ws package (npm install ws) or pass options.WebSocket");
    }
}
