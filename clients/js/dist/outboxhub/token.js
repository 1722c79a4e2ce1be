/** Tokens: a fixed JWT or a provider function, and when to refresh one before the hub's `exp`. */
// Refresh when a third of the remaining lifetime is left, but never more than a minute before expiry:
// an hour-long token is refreshed a minute early, a 3 s test token after 2 s (the Python SDK's rule).
const SHARE = 1 / 3;
const MAX_MARGIN_MS = 60_000;
/** The token now: the fixed string, or what the provider returns; anything but a non-empty string throws. */
export async function getToken(source) {
    const token = typeof source === "function" ? await source() : source;
    if (typeof token !== "string" || token === "") {
        const shown = typeof token === "string" ? '""' : String(token).slice(0, 60);
        throw new TypeError(`the token (or the token provider's result) must be a non-empty string, got ${shown}`);
    }
    return token;
}
/** Milliseconds from `nowMs` until a token expiring at `expS` (epoch seconds) should be replaced. */
export function refreshDelayMs(expS, nowMs) {
    const remaining = expS * 1000 - nowMs;
    if (remaining <= 0)
        return 0;
    return Math.max(0, remaining - Math.min(MAX_MARGIN_MS, remaining * SHARE));
}
