/** Typed topics: a topic name (or subscription pattern) bound to a payload type. */
/**
 * `topic<ProcessState>("process.state")`: publish and subscribe with it and TypeScript checks the payload.
 * A `decode` function (e.g. a schema's `parse`) also checks delivered payloads at run time: one that throws
 * NACKs the event with a reason naming the topic and the problem, and the handler never sees it.
 */
export function topic(name, options) {
    // The hub checks the name's syntax (docs/protocol.md) and answers bad_request naming the problem.
    if (typeof name !== "string" || name === "") {
        throw new TypeError(`a topic name must be a non-empty string, got ${JSON.stringify(name)}`);
    }
    return Object.freeze(options?.decode ? { name, decode: options.decode } : { name });
}
/** The name of a topic given as a string or a `Topic`. */
export function topicName(t) {
    return typeof t === "string" ? t : t.name;
}
