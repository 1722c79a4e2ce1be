/** What a subscriber receives: messages with their ack verbs, and the async iterator that yields them. */
import type { DeliveryContext, HubEvent } from "./types.js";

/** Sends ACK, NACK or EXTEND for one delivery (a no-op when the connection it came on is gone). */
export type Settle = (
  op: "ACK" | "NACK" | "EXTEND",
  extra?: { reason?: string; delay_ms?: number; terminal?: boolean },
) => void;

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
export class Message<T = unknown> {
  readonly event: HubEvent<T>;
  readonly context: DeliveryContext;
  readonly group: string | null;
  #settle: Settle;
  #settled: "ack" | "nack" | "terminate" | undefined;
  #done: () => void;

  constructor(event: HubEvent<T>, context: DeliveryContext, group: string | null, settle: Settle, done: () => void) {
    this.event = event;
    this.context = context;
    this.group = group;
    this.#settle = settle;
    this.#done = done;
  }

  /** The (decoded) payload. */
  get payload(): T {
    return this.event.payload;
  }

  /** 1 for the first delivery. */
  get attempt(): number {
    return this.context.attempt;
  }

  get redelivered(): boolean {
    return this.context.attempt > 1;
  }

  /** True once ack() or nack() was called. */
  get settled(): boolean {
    return this.#settled !== undefined;
  }

  #claim(verb: "ack" | "nack" | "terminate"): void {
    if (this.#settled !== undefined) {
      throw new Error(`message ${this.event.id} was already ${this.#settled}ed; settle it once`);
    }
    this.#settled = verb;
    this.#done();
  }

  /** Tell the hub this event is done. */
  ack(): void {
    this.#claim("ack");
    this.#settle("ACK");
  }

  /** Ask for a redelivery (after `delayMs`, else the group's backoff). */
  nack(options?: NackOptions): void {
    const delay = options?.delayMs;
    if (delay !== undefined && !(Number.isInteger(delay) && delay >= 0)) {
      throw new RangeError(`delayMs must be an integer >= 0, got ${delay}`);
    }
    this.#claim("nack");
    const extra: { reason?: string; delay_ms?: number } = {};
    if (options?.reason !== undefined) extra.reason = options.reason;
    if (delay !== undefined) extra.delay_ms = delay;
    this.#settle("NACK", extra);
  }

  /** Dead-letter this event now with `reason`, no more attempts (a terminal NACK). */
  terminate(reason = "terminated by the consumer"): void {
    this.#claim("terminate");
    this.#settle("NACK", { reason, terminal: true });
  }

  /**
   * Still working on it: push the delivery's ack deadline to now + the subscription's `ack_timeout_ms`
   * (an EXTEND frame), so it is not redelivered meanwhile. Call it again before each deadline.
   */
  extend(): void {
    if (this.#settled !== undefined) {
      throw new Error(`message ${this.event.id} was already ${this.#settled}ed`);
    }
    this.#settle("EXTEND");
  }
}

/**
 * The messages of one subscription as an async iterator: `for await (const msg of stream)`. Leaving the
 * loop (break, return, throw) unsubscribes; the hub redelivers what was not settled. Messages wait in the
 * stream until taken; for a group, the subscription's `max_in_flight` bounds how many.
 */
export class MessageStream<T = unknown> implements AsyncIterableIterator<Message<T>> {
  readonly topic: string;
  readonly group: string | null;
  #buffer: Message<T>[] = [];
  #waiting: ((r: IteratorResult<Message<T>>) => void)[] = [];
  #failing: ((e: Error) => void)[] = [];
  #ended = false;
  #error: Error | undefined;
  #unsubscribe: () => Promise<void>;

  constructor(topic: string, group: string | null, unsubscribe: () => Promise<void>) {
    this.topic = topic;
    this.group = group;
    this.#unsubscribe = unsubscribe;
  }

  /** @internal A delivery for this stream. */
  push(message: Message<T>): void {
    if (this.#ended) return;
    const take = this.#waiting.shift();
    this.#failing.shift();
    if (take) take({ value: message, done: false });
    else this.#buffer.push(message);
  }

  /** @internal No more messages: the subscription ended (with `error` when it failed). */
  end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#buffer = [];
    const waiting = this.#waiting;
    const failing = this.#failing;
    this.#waiting = [];
    this.#failing = [];
    waiting.forEach((take, i) => (error ? failing[i]!(error) : take({ value: undefined, done: true })));
  }

  next(): Promise<IteratorResult<Message<T>>> {
    const message = this.#buffer.shift();
    if (message) return Promise.resolve({ value: message, done: false });
    if (this.#ended) {
      return this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push(resolve);
      this.#failing.push(reject);
    });
  }

  async return(): Promise<IteratorResult<Message<T>>> {
    await this.unsubscribe();
    return { value: undefined, done: true };
  }

  /** End the subscription; the iteration finishes. */
  async unsubscribe(): Promise<void> {
    this.end();
    await this.#unsubscribe();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
