/** Tokens: a fixed JWT or a provider function, and when to refresh one before the hub's `exp`. */
/** A function returning a fresh JWT; called at every (re)connect and again before each expiry. */
export type TokenProvider = () => string | Promise<string>;
/** A fixed JWT, or a provider of fresh ones. */
export type TokenSource = string | TokenProvider;
/** The token now: the fixed string, or what the provider returns; anything but a non-empty string throws. */
export declare function getToken(source: TokenSource | undefined): Promise<string>;
/** Milliseconds from `nowMs` until a token expiring at `expS` (epoch seconds) should be replaced. */
export declare function refreshDelayMs(expS: number, nowMs: number): number;
