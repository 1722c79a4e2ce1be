/** A time-ordered RFC 9562 UUIDv7 (crypto.getRandomValues works in insecure browser contexts too). */
export declare function uuidv7(): string;
