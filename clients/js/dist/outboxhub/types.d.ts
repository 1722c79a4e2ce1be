/** The shapes of the wire protocol (docs/protocol.md) and of the client's options. */
import type { TokenSource } from "./token.js";
/** Optional fields of a publish (PUBLISH opts). `id` makes the publish idempotent. */
export interface PublishOpts {
    id?: string;
    key?: string;
    headers?: Record<string, string>;
    tags?: string[];
    caused_by?: string[];
    sid?: string;
    /** ms since the epoch; the hub's clock when absent */
    ts?: number;
}
/** What a confirmed publish resolves to. `duplicate`: an event with this id was already stored. */
export interface PublishResult {
    id: string;
    seq: number;
    duplicate: boolean;
}
/** A stored event as delivered. `topic` is the concrete topic, `payload` the published value. */
export interface HubEvent<T = unknown> {
    id: string;
    topic: string;
    seq: number;
    ts: number;
    key?: string;
    payload: T;
    headers?: Record<string, string>;
    tags?: string[];
    caused_by?: string[];
    sid?: string;
}
/** Delivery context: `attempt` starts at 1. */
export interface DeliveryContext {
    attempt: number;
    redelivered: boolean;
}
/** Where a new consumer group starts. */
export type StartPosition = "earliest" | "latest" | number | `seq:${number}` | `ts:${number}`;
/** Options of a group subscription (SUBSCRIBE opts). */
export interface SubscribeOpts {
    start?: StartPosition;
    max_in_flight?: number;
    ack_timeout_ms?: number;
    max_deliver?: number;
    ordered_by_key?: boolean;
}
/** Resolving (or returning) ACKs the event; throwing or rejecting NACKs it. */
/** The context a handler gets: the delivery's, plus `extend()` (EXTEND: push the ack deadline). */
export interface HandlerContext extends DeliveryContext {
    extend(): void;
}
export type Handler<T> = (event: HubEvent<T>, ctx: HandlerContext) => void | Promise<void>;
/** `closing`: close() is draining (no new work is taken). */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closing" | "closed";
/** What the client needs of a WebSocket: the browser's, Node's (>= 22) or the `ws` package's. */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: never) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onerror: ((ev: never) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
}
/** The WebSocket constructor to use (the `ws` package in Node before v22). */
export type WebSocketClass = new (url: string) => WebSocketLike;
export interface ClientOptions {
    /** A JWT, or a function returning one: called on every (re)connect and before the token expires. */
    token?: TokenSource;
    /** The WebSocket class; default: the global one, else the `ws` package (an optional peer dependency). */
    WebSocket?: WebSocketClass;
    /** Reconnect after a lost connection (default true). */
    reconnect?: boolean;
    /** Reconnect and retry backoff: doubles from initialMs (250) up to maxMs (10000), with jitter. */
    backoff?: {
        initialMs?: number;
        maxMs?: number;
    };
    /** How long connect() waits for the AUTH reply (default 10000 ms). */
    connectTimeoutMs?: number;
    /** Unconfirmed publishes on the wire at once (default 1024); more wait their turn, in call order. */
    maxInFlight?: number;
    /** Re-send a publish refused with `rate_limited` after the hub's `retry_after_ms` (else the backoff),
     * in order (default true). `unavailable` and `not_authenticated` (no effect was had) are always retried. */
    retryRateLimited?: boolean;
    /** How long close() waits for unconfirmed publishes and running handlers (default 10000 ms). */
    drainTimeoutMs?: number;
    onState?: (state: ClientState, detail?: unknown) => void;
    /** Errors no promise can carry (a re-subscribe refused after a reconnect, an unreadable frame). */
    onError?: (error: Error) => void;
}
