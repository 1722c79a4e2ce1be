/** What a subscriber receives: messages with their ack verbs, and the async iterator that yields them. */
import type { DeliveryContext, HubEvent } from "./types.js";
/** Sends ACK, NACK or EXTEND for one delivery (a no-op when the connection it came on is gone). */
export type Settle = (op: "ACK" | "NACK" | "EXTEND", extra?: {
    reason?: string;
    delay_ms?: number;
    terminal?: boolean;
}) => void;
/** Options of {@link Message.nack}. */
export interface NackOptions {
    /** Recorded in the dead-letter event's `x-reason` header if this was the last attempt. */
    reason?: string;
    /** Redeliver after this many ms (the hub caps it at 300000) instead of the group's backoff. */
    delayMs?: number;
}
/**
 * A delivered event, to be settled once with {@link ack} or {@link nack}. An unsettled message is
 * redelivered after the group's `ack_timeout_ms` (unless {@link extend}ed); {@link terminate} dead-letters
 * it at once. For a group-less subscription the verbs do nothing.
 */
export declare class Message<T = unknown> {
    #private;
    readonly event: HubEvent<T>;
    readonly context: DeliveryContext;
    readonly group: string | null;
    constructor(event: HubEvent<T>, context: DeliveryContext, group: string | null, settle: Settle, done: () => void);
    /** The (decoded) payload. */
    get payload(): T;
    /** 1 for the first delivery. */
    get attempt(): number;
    get redelivered(): boolean;
    /** True once ack() or nack() was called. */
    get settled(): boolean;
    /** Tell the hub this event is done. */
    ack(): void;
    /** Ask for a redelivery (after `delayMs`, else the group's backoff). */
    nack(options?: NackOptions): void;
    /** Dead-letter this event now with `reason`, no more attempts (a terminal NACK). */
    terminate(reason?: string): void;
    /**
     * Still working on it: push the delivery's ack deadline to now + the subscription's `ack_timeout_ms`
     * (an EXTEND frame), so it is not redelivered meanwhile. Call it again before each deadline.
     */
    extend(): void;
}
/**
 * The messages of one subscription as an async iterator: `for await (const msg of stream)`. Leaving the
 * loop (break, return, throw) unsubscribes; the hub redelivers what was not settled. Messages wait in the
 * stream until taken; for a group, the subscription's `max_in_flight` bounds how many.
 */
export declare class MessageStream<T = unknown> implements AsyncIterableIterator<Message<T>> {
    #private;
    readonly topic: string;
    readonly group: string | null;
    constructor(topic: string, group: string | null, unsubscribe: () => Promise<void>);
    /** @internal A delivery for this stream. */
    push(message: Message<T>): void;
    /** @internal No more messages: the subscription ended (with `error` when it failed). */
    end(error?: Error): void;
    next(): Promise<IteratorResult<Message<T>>>;
    return(): Promise<IteratorResult<Message<T>>>;
    /** End the subscription; the iteration finishes. */
    unsubscribe(): Promise<void>;
    [Symbol.asyncIterator](): this;
}
