// Types of outboxhub.js, the browser and Node client of an outboxhub hub (served at /outboxhub.d.ts).

/** Optional fields of a publish (docs/protocol.md, PUBLISH opts). `id` makes the publish idempotent. */
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

/** Options of a group subscription (docs/protocol.md, SUBSCRIBE opts). */
export interface SubscribeOpts {
  start?: StartPosition;
  max_in_flight?: number;
  ack_timeout_ms?: number;
  max_deliver?: number;
  ordered_by_key?: boolean;
}

/** Resolving (or returning) ACKs the event; throwing or rejecting NACKs it. */
export type Handler<T> = (event: HubEvent<T>, ctx: DeliveryContext) => void | Promise<void>;

export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** The WebSocket constructor to use (the `ws` package in Node before v22). */
export type WebSocketClass = new (url: string) => {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
};

export interface ClientOptions {
  /** A JWT, or a function returning one (called on every (re)connect, so it can refresh). */
  token?: string | (() => string | Promise<string>);
  WebSocket?: WebSocketClass;
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean;
  /** Reconnect backoff: doubles from initialMs (250) up to maxMs (10000), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** How long connect() waits for the AUTH reply (default 10000 ms). */
  connectTimeoutMs?: number;
  onState?: (state: ClientState, detail?: unknown) => void;
  /** Errors no promise can carry (a re-subscribe refused after a reconnect, an unreadable frame). */
  onError?: (error: Error) => void;
}

/** Every error code an ERR from the hub can carry (docs/protocol.md; src/outboxhub/protocol/codes.py is
 * their home and tests/test_error_codes.py holds this list to it). */
export type ErrorCode =
  | "no_token"
  | "jwt_invalid"
  | "token_expired"
  | "not_authenticated"
  | "forbidden"
  | "bad_request"
  | "too_large"
  | "rate_limited"
  | "not_subscribed"
  | "unavailable"
  | "internal";

export const ERROR_CODES: readonly ErrorCode[];

/** An ERR from the hub (`code`: an {@link ErrorCode}) or a client-side failure: `closed`, `connection_lost`,
 * `timeout`, `auth_failed`. */
export class HubError extends Error {
  readonly code: string;
  readonly msg: string;
  constructor(code: string, msg: string);
}

export class OutboxHubClient {
  constructor(url: string, tokenOrOptions?: string | ClientOptions);
  readonly url: string;
  readonly state: ClientState;
  /** Open and authenticate; safe to call again. */
  connect(): Promise<void>;
  /** Publish and wait for the durable commit. */
  publish<T = unknown>(topic: string, payload: T, opts?: PublishOpts): Promise<PublishResult>;
  /** Subscribe to a pattern in a consumer group (null: live events only). */
  subscribe<T = unknown>(
    topic: string,
    group: string | null | undefined,
    handler: Handler<T>,
    opts?: SubscribeOpts,
  ): Promise<void>;
  unsubscribe(topic: string, group?: string | null): Promise<void>;
  /** Close for good (no reconnect). */
  close(): void;
}

/** The legacy PromClient protocol's name for the client. */
export { OutboxHubClient as PromClient };

/** Create a client and connect it. */
export function connect(url: string, tokenOrOptions?: string | ClientOptions): Promise<OutboxHubClient>;

/** A time-ordered UUIDv7 (what publish uses as the event id when none is given). */
export function uuidv7(): string;
