/**
 * A delivered event, to be settled once with {@link ack} or {@link nack}. An unsettled message is
 * redelivered after the group's `ack_timeout_ms` (unless {@link extend}ed); {@link terminate} dead-letters
 * it at once. For a group-less subscription the verbs do nothing.
 */
export class Message {
    event;
    context;
    group;
    #settle;
    #settled;
    #done;
    constructor(event, context, group, settle, done) {
        this.event = event;
        this.context = context;
        this.group = group;
        this.#settle = settle;
        this.#done = done;
    }
    /** The (decoded) payload. */
    get payload() {
        return this.event.payload;
    }
    /** 1 for the first delivery. */
    get attempt() {
        return this.context.attempt;
    }
    get redelivered() {
        return this.context.attempt > 1;
    }
    /** True once ack() or nack() was called. */
    get settled() {
        return this.#settled !== undefined;
    }
    #claim(verb) {
        if (this.#settled !== undefined) {
            throw new Error(`message ${this.event.id} was already ${this.#settled}ed; settle it once`);
        }
        this.#settled = verb;
        this.#done();
    }
    /** Tell the hub this event is done. */
    ack() {
        this.#claim("ack");
        this.#settle("ACK");
    }
    /** Ask for a redelivery (after `delayMs`, else the group's backoff). */
    nack(options) {
        const delay = options?.delayMs;
        if (delay !== undefined && !(Number.isInteger(delay) && delay >= 0)) {
            throw new RangeError(`delayMs must be an integer >= 0, got ${delay}`);
        }
        this.#claim("nack");
        const extra = {};
        if (options?.reason !== undefined)
            extra.reason = options.reason;
        if (delay !== undefined)
            extra.delay_ms = delay;
        this.#settle("NACK", extra);
    }
    /** Dead-letter this event now with `reason`, no more attempts (a terminal NACK). */
    terminate(reason = "terminated by the consumer") {
        this.#claim("terminate");
        this.#settle("NACK", { reason, terminal: true });
    }
    /**
     * Still working on it: push the delivery's ack deadline to now + the subscription's `ack_timeout_ms`
     * (an EXTEND frame), so it is not redelivered meanwhile. Call it again before each deadline.
     */
    extend() {
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
export class MessageStream {
    topic;
    group;
    #buffer = [];
    #waiting = [];
    #failing = [];
    #ended = false;
    #error;
    #unsubscribe;
    constructor(topic, group, unsubscribe) {
        this.topic = topic;
        this.group = group;
        this.#unsubscribe = unsubscribe;
    }
    /** @internal A delivery for this stream. */
    push(message) {
        if (this.#ended)
            return;
        const take = this.#waiting.shift();
        this.#failing.shift();
        if (take)
            take({ value: message, done: false });
        else
            this.#buffer.push(message);
    }
    /** @internal No more messages: the subscription ended (with `error` when it failed). */
    end(error) {
        if (this.#ended)
            return;
        this.#ended = true;
        this.#error = error;
        this.#buffer = [];
        const waiting = this.#waiting;
        const failing = this.#failing;
        this.#waiting = [];
        this.#failing = [];
        waiting.forEach((take, i) => (error ? failing[i](error) : take({ value: undefined, done: true })));
    }
    next() {
        const message = this.#buffer.shift();
        if (message)
            return Promise.resolve({ value: message, done: false });
        if (this.#ended) {
            return this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
            this.#waiting.push(resolve);
            this.#failing.push(reject);
        });
    }
    async return() {
        await this.unsubscribe();
        return { value: undefined, done: true };
    }
    /** End the subscription; the iteration finishes. */
    async unsubscribe() {
        this.end();
        await this.#unsubscribe();
    }
    [Symbol.asyncIterator]() {
        return this;
    }
}
