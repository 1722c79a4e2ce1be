/** Pieces of the client's subscriptions and frames that need none of its state. */
import { HubConnectionError, type HubError, RateLimited } from "./errors.js";
import { Message, type MessageStream, type Settle } from "./messages.js";
import type { Topic } from "./topic.js";
import type { ClientOptions, DeliveryContext, Handler, HandlerContext, HubEvent, SubscribeOpts, WebSocketClass } from "./types.js";

export type Frame = { op: string } & Record<string, unknown>;
export type Reply = Record<string, unknown>;

/** A request waiting for its reply. */
export interface Pending {
  rid: number;
  frame: Frame;
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
  /** Survives a lost connection: sent again, with the same rid and event id, after the reconnect. */
  resend: boolean;
  sent: boolean;
  /** A publish whose event id the client made up: a duplicate of it can only be its own first attempt. */
  generatedId: boolean;
}

export interface Sub {
  topic: string;
  group: string | null;
  opts: SubscribeOpts | undefined;
  deliver: (event: HubEvent<unknown>, ctx: DeliveryContext, settle: Settle) => void;
  stream?: MessageStream<unknown>;
}

/** A subscription made with a handler. */
export interface Subscription {
  readonly topic: string;
  readonly group: string | null;
  unsubscribe(): Promise<void>;
}

export function subKey(topic: string, group: string | null): string {
  return `${topic}::${group ?? ""}`;
}

export function messageText(data: unknown): string {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data); // Node Buffer
  return String(data);
}

export function reasonOf(error: unknown): string {
  return String((error as { message?: unknown } | null)?.message ?? error);
}

/** The decoder of a typed topic's payloads (identity for a plain pattern). */
export function decoder<T>(t: string | Topic<T>): (event: HubEvent<unknown>) => HubEvent<T> {
  const decode = typeof t === "string" ? undefined : t.decode;
  if (!decode) return (event) => event as HubEvent<T>;
  return (event) => {
    try {
      return { ...event, payload: decode(event.payload) };
    } catch (error) {
      throw new TypeError(`payload of ${event.topic} (event ${event.id}) does not decode: ${reasonOf(error)}`);
    }
  };
}

/** The SUBSCRIBE frame of a subscription. */
export function subscribeFrame(sub: { topic: string; group: string | null; opts: SubscribeOpts | undefined }): Frame {
  const frame: Frame = { op: "SUBSCRIBE", topic: sub.topic };
  if (sub.group !== null) frame.group = sub.group;
  if (sub.opts) frame.opts = sub.opts;
  return frame;
}

/** Bookkeeping of work in progress (running handlers, taken messages), for a draining close(). */
export interface Work {
  enter(): void;
  leave(): void;
}

type Deliver = Sub["deliver"];

/**
 * Run `handler` per delivery: resolving ACKs, throwing NACKs; a payload that does not decode is
 * dead-lettered at once (a terminal NACK). `ctx.extend()` sends EXTEND for a long-running handler.
 */
export function handlerDelivery<T>(handler: Handler<T>, decode: (e: HubEvent<unknown>) => HubEvent<T>, work: Work): Deliver {
  return (raw, ctx, settle) => {
    const nack = (error: unknown): void => settle("NACK", { reason: reasonOf(error) });
    let event: HubEvent<T>;
    try {
      event = decode(raw);
    } catch (error) {
      settle("NACK", { reason: reasonOf(error), terminal: true }); // fails the same way every time
      return;
    }
    const handlerCtx: HandlerContext = { ...ctx, extend: () => settle("EXTEND") };
    work.enter();
    try {
      Promise.resolve(handler(event, handlerCtx))
        .then(() => settle("ACK"), nack)
        .finally(() => work.leave());
    } catch (error) {
      nack(error);
      work.leave();
    }
  };
}

/** Hand each delivery to `stream` as a Message; a payload that does not decode is dead-lettered instead. */
export function streamDelivery<T>(stream: MessageStream<T>, decode: (e: HubEvent<unknown>) => HubEvent<T>, work: Work): Deliver {
  return (raw, ctx, settle) => {
    let event: HubEvent<T>;
    try {
      event = decode(raw);
    } catch (error) {
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
export function retried(error: HubError, options: ClientOptions): boolean {
  if (error instanceof RateLimited) return options.retryRateLimited !== false;
  return RETRIED.has(error.code);
}

/** A pause of the backoff for the `attempt`-th try (1, 2, …): doubling up to the maximum, with jitter. */
export function backoffDelay(options: ClientOptions, attempt: number): number {
  const initial = options.backoff?.initialMs ?? 250;
  const max = options.backoff?.maxMs ?? 10_000;
  const base = Math.min(max, initial * 2 ** (attempt - 1));
  return base / 2 + Math.random() * (base / 2);
}

/** The WebSocket class: the option, the global one, else the `ws` package. */
export async function socketClass(options: ClientOptions): Promise<WebSocketClass> {
  if (options.WebSocket) return options.WebSocket;
  const global = (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
  if (global !== undefined) return global;
  const name = "ws"; // a variable, so bundlers for the browser leave it alone
  try {
    const mod = await import(name);
    return (mod.WebSocket ?? mod.default) as WebSocketClass;
  } catch {
    throw new HubConnectionError(
      "no global WebSocket (Node.js < 22): install the ws package (npm install ws) or pass options.WebSocket",
    );
  }
}
