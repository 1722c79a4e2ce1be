/**
 * The client's errors: one class per protocol error code, the same tree as the Python SDK's
 * (src/outboxhub/client/_exceptions.py):
 *
 *     HubError(code, msg)            the hub answered ERR, or the link to it failed
 *     ├── AuthFailed                 no_token, jwt_invalid: the token was refused
 *     │   └── TokenExpired           token_expired: use a token provider function
 *     ├── NotAuthenticated           not_authenticated
 *     ├── Forbidden                  forbidden
 *     ├── BadRequest                 bad_request (the message names the field)
 *     ├── TooLarge                   too_large
 *     ├── RateLimited                rate_limited (`retryAfterMs` when the hub sent `retry_after_ms`)
 *     ├── NotSubscribed              not_subscribed
 *     ├── Unavailable                unavailable: the request had no effect
 *     ├── InternalError              internal
 *     └── HubConnectionError         code "connection": cannot connect, or the link dropped for good
 *         └── ClientClosed           code "closed": the client was closed while the request waited
 *
 * `errorFromCode` is the one place that maps a wire code to its class; a code this client does not know
 * yet becomes a plain `HubError` that still carries it.
 */
import { isErrorCode } from "./codes.js";
/** An ERR from the hub (`code` is an error code of docs/protocol.md) or a link failure. */
export class HubError extends Error {
    code;
    msg;
    constructor(code, msg) {
        super(`${code}: ${msg}`);
        this.name = new.target.name;
        this.code = code;
        this.msg = msg;
    }
}
/** The token was refused (`no_token`, `jwt_invalid`); the hub closed the connection. */
export class AuthFailed extends HubError {
}
/** The token expired (`token_expired`). Pass a token provider function to refresh it. */
export class TokenExpired extends AuthFailed {
}
/** A request came before a successful AUTH (`not_authenticated`). */
export class NotAuthenticated extends HubError {
}
/** The token's policy does not allow this topic, pattern or group (`forbidden`). */
export class Forbidden extends HubError {
}
/** The request broke a protocol rule (`bad_request`); the message names the field at fault. */
export class BadRequest extends HubError {
}
/** The frame exceeded the hub's size limit (`too_large`). */
export class TooLarge extends HubError {
}
/** The publish rate or the subscription count is over the hub's limit (`rate_limited`). */
export class RateLimited extends HubError {
    /** How long the hub asked to wait before retrying (its `retry_after_ms`), when it said. */
    retryAfterMs;
    constructor(code, msg, retryAfterMs) {
        super(code, msg);
        this.retryAfterMs = retryAfterMs;
    }
}
/** ACK, NACK or UNSUBSCRIBE for a subscription this connection does not have (`not_subscribed`). */
export class NotSubscribed extends HubError {
}
/** The hub's store is unavailable or the hub is shutting down (`unavailable`); no effect was had. */
export class Unavailable extends HubError {
}
/** The hub failed unexpectedly (`internal`); the request may or may not have been carried out. */
export class InternalError extends HubError {
}
/** The hub cannot be reached, or the connection dropped and will not be re-established. */
export class HubConnectionError extends HubError {
    constructor(msg, code = "connection") {
        super(code, msg);
    }
}
/** The client was closed while the request was waiting (code `closed`). */
export class ClientClosed extends HubConnectionError {
    constructor(msg = "the client is closed") {
        super(msg, "closed");
    }
}
const BY_CODE = Object.freeze({
    no_token: AuthFailed,
    jwt_invalid: AuthFailed,
    token_expired: TokenExpired,
    not_authenticated: NotAuthenticated,
    forbidden: Forbidden,
    bad_request: BadRequest,
    too_large: TooLarge,
    rate_limited: RateLimited,
    not_subscribed: NotSubscribed,
    unavailable: Unavailable,
    internal: InternalError,
});
/** The error for an `ERR {code, msg}` frame (or a link failure), by code. */
export function errorFromCode(code, msg, frame) {
    if (code === "rate_limited") {
        const after = frame?.retry_after_ms;
        return new RateLimited(code, msg, typeof after === "number" && after >= 0 ? after : undefined);
    }
    if (isErrorCode(code))
        return new BY_CODE[code](code, msg);
    if (code === "connection")
        return new HubConnectionError(msg);
    if (code === "closed")
        return new ClientClosed(msg);
    return new HubError(code, msg);
}
