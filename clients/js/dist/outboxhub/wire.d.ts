/** Pieces of the client's subscriptions and frames that need none of its state. */
import { type HubError } from "./errors.js";
import { type MessageStream, type Settle } from "./messages.js";
import type { Topic } from "./topic.js";
import type { ClientOptions, DeliveryContext, Handler, HubEvent, SubscribeOpts, WebSocketClass } from "./types.js";
export type Frame = {
    op: string;
} & Record<string, unknown>;
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
export declare function subKey(topic: string, group: string | null): string;
export declare function messageText(data: unknown): string;
export declare function reasonOf(error: unknown): string;
/** The decoder of a typed topic's payloads (identity for a plain pattern). */
export declare function decoder<T>(t: string | Topic<T>): (event: HubEvent<unknown>) => HubEvent<T>;
/** The SUBSCRIBE frame of a subscription. */
export declare function subscribeFrame(sub: {
    topic: string;
    group: string | null;
    opts: SubscribeOpts | undefined;
}): Frame;
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
export declare function handlerDelivery<T>(handler: Handler<T>, decode: (e: HubEvent<unknown>) => HubEvent<T>, work: Work): Deliver;
/** Hand each delivery to `stream` as a Message; a payload that does not decode is dead-lettered instead. */
export declare function streamDelivery<T>(stream: MessageStream<T>, decode: (e: HubEvent<unknown>) => HubEvent<T>, work: Work): Deliver;
/** Whether a publish refused with `error` is held back and re-sent (it had no effect). */
export declare function retried(error: HubError, options: ClientOptions): boolean;
/** A pause of the backoff for the `attempt`-th try (1, 2, …): doubling up to the maximum, with jitter. */
export declare function backoffDelay(options: ClientOptions, attempt: number): number;
/** The WebSocket class: the option, the global one, else the `ws` package. */
export declare function socketClass(options: ClientOptions): Promise<WebSocketClass>;
export {};
