import { MessageStream } from "./messages.js";
import { type Topic } from "./topic.js";
import type { ClientOptions, ClientState, Handler, PublishOpts, PublishResult, SubscribeOpts } from "./types.js";
import { type Subscription } from "./wire.js";
export type { Subscription } from "./wire.js";
export declare class OutboxHubClient {
    #private;
    readonly url: string;
    readonly options: ClientOptions;
    /** The handler of each subscription, by "topic::group" (the legacy PromClient's field). */
    readonly handlers: Map<string, Handler<never>>;
    /** The token's subject and expiry (epoch seconds) from the last accepted AUTH. */
    subject: string | null | undefined;
    exp: number | undefined;
    /** Reconnects made, and tokens refreshed on an open connection. */
    reconnects: number;
    tokenRefreshes: number;
    /**
     * @param url  WebSocket URL of the hub, e.g. ws://127.0.0.1:8090/ (or /ws on the ops port)
     * @param tokenOrOptions  a token, or {@link ClientOptions}
     */
    constructor(url: string, tokenOrOptions?: string | ClientOptions);
    /** idle | connecting | open | reconnecting | closing | closed */
    get state(): ClientState;
    /** Open the connection and authenticate. Resolves once AUTH is accepted; safe to call repeatedly. */
    connect(): Promise<void>;
    /**
     * Publish one event and wait until the hub has stored it durably. Publishes are pipelined and go out in
     * call order; the event id (a UUIDv7 unless `opts.id`) makes re-sends after a reconnect harmless.
     */
    publish<T = unknown>(topic: string | Topic<T>, payload: NoInfer<T>, opts?: PublishOpts): Promise<PublishResult>;
    /**
     * Subscribe `handler` to `topic` (a pattern or a typed topic) in consumer `group` (null: live events only,
     * no ACKs). The handler resolving ACKs the event, throwing NACKs it with the error message as reason.
     * Resolves when the hub confirms; the subscription is renewed after every reconnect.
     */
    subscribe<T = unknown>(topic: string | Topic<T>, group: string | null | undefined, handler: Handler<T>, opts?: SubscribeOpts): Promise<Subscription>;
    /**
     * Subscribe and receive the messages as an async iterator; settle each with `msg.ack()` / `msg.nack()`.
     * Resolves once the hub confirms the subscription.
     */
    messages<T = unknown>(topic: string | Topic<T>, group: string | null | undefined, opts?: SubscribeOpts): Promise<MessageStream<T>>;
    /** End the subscription (topic, group). */
    unsubscribe(topic: string | Topic<unknown>, group?: string | null): Promise<void>;
    /**
     * Close for good. By default it drains first: no new work is taken, and it waits (up to `drainTimeoutMs`)
     * until every publish is confirmed and every running handler (and taken message) is settled. Then the
     * socket closes and whatever still waits rejects with `ClientClosed`. `{ drain: false }` closes at once.
     */
    close(options?: {
        drain?: boolean;
    }): Promise<void>;
}
/** Create a client and connect it. */
export declare function connect(url: string, tokenOrOptions?: string | ClientOptions): Promise<OutboxHubClient>;
