/** An ERR from the hub (`code` is an error code of docs/protocol.md) or a link failure. */
export declare class HubError extends Error {
    readonly code: string;
    readonly msg: string;
    constructor(code: string, msg: string);
}
/** The token was refused (`no_token`, `jwt_invalid`); the hub closed the connection. */
export declare class AuthFailed extends HubError {
}
/** The token expired (`token_expired`). Pass a token provider function to refresh it. */
export declare class TokenExpired extends AuthFailed {
}
/** A request came before a successful AUTH (`not_authenticated`). */
export declare class NotAuthenticated extends HubError {
}
/** The token's policy does not allow this topic, pattern or group (`forbidden`). */
export declare class Forbidden extends HubError {
}
/** The request broke a protocol rule (`bad_request`); the message names the field at fault. */
export declare class BadRequest extends HubError {
}
/** The frame exceeded the hub's size limit (`too_large`). */
export declare class TooLarge extends HubError {
}
/** The publish rate or the subscription count is over the hub's limit (`rate_limited`). */
export declare class RateLimited extends HubError {
    /** How long the hub asked to wait before retrying (its `retry_after_ms`), when it said. */
    readonly retryAfterMs: number | undefined;
    constructor(code: string, msg: string, retryAfterMs?: number);
}
/** ACK, NACK or UNSUBSCRIBE for a subscription this connection does not have (`not_subscribed`). */
export declare class NotSubscribed extends HubError {
}
/** The hub's store is unavailable or the hub is shutting down (`unavailable`); no effect was had. */
export declare class Unavailable extends HubError {
}
/** The hub failed unexpectedly (`internal`); the request may or may not have been carried out. */
export declare class InternalError extends HubError {
}
/** The hub cannot be reached, or the connection dropped and will not be re-established. */
export declare class HubConnectionError extends HubError {
    constructor(msg: string, code?: string);
}
/** The client was closed while the request was waiting (code `closed`). */
export declare class ClientClosed extends HubConnectionError {
    constructor(msg?: string);
}
/** The error for an `ERR {code, msg}` frame (or a link failure), by code. */
export declare function errorFromCode(code: string, msg: string, frame?: {
    retry_after_ms?: unknown;
}): HubError;
