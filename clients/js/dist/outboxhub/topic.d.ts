/** Typed topics: a topic name (or subscription pattern) bound to a payload type. */
/** A topic (or pattern) whose payloads are `T`. `decode`, when given, checks a delivered payload. */
export interface Topic<T> {
    readonly name: string;
    /** Turns a delivered payload into a `T`, throwing when it is not one (the event is then NACKed). */
    readonly decode?: (raw: unknown) => T;
    /** Type-level only: the payload type. */
    readonly __payload?: T;
}
/**
 * `topic<ProcessState>("process.state")`: publish and subscribe with it and TypeScript checks the payload.
 * A `decode` function (e.g. a schema's `parse`) also checks delivered payloads at run time: one that throws
 * NACKs the event with a reason naming the topic and the problem, and the handler never sees it.
 */
export declare function topic<T>(name: string, options?: {
    decode?: (raw: unknown) => T;
}): Topic<T>;
/** The name of a topic given as a string or a `Topic`. */
export declare function topicName(t: string | Topic<unknown>): string;
