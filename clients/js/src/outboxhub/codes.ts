/**
 * The hub's error codes and WebSocket close codes (docs/protocol.md, "Error codes" and "Close codes").
 * src/outboxhub/protocol/codes.py is their one home; tests/test_error_codes.py holds this copy to it.
 */

/** Every error code an ERR from the hub can carry. */
export const ERROR_CODES = Object.freeze([
  "no_token",
  "jwt_invalid",
  "token_expired",
  "not_authenticated",
  "forbidden",
  "bad_request",
  "too_large",
  "rate_limited",
  "not_subscribed",
  "unavailable",
  "internal",
] as const);

/** An error code of the wire protocol. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** AUTH failed (`no_token`, `jwt_invalid`), or no AUTH came in time. */
export const CLOSE_AUTH_FAILED = 4001;
/** The token of an authenticated connection expired (`token_expired`). */
export const CLOSE_TOKEN_EXPIRED = 4003;

/** The close code that follows `ERR <code>`, for the codes after which the hub closes the connection. */
export const CLOSE_CODES: Readonly<Partial<Record<ErrorCode, number>>> = Object.freeze({
  no_token: CLOSE_AUTH_FAILED,
  jwt_invalid: CLOSE_AUTH_FAILED,
  token_expired: CLOSE_TOKEN_EXPIRED,
});

/** Whether `code` is one of the protocol's error codes. */
export function isErrorCode(code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}
