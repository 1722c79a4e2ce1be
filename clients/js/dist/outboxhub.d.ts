/**
 * @outboxhub/client: the TypeScript/JavaScript client of an outboxhub hub, for Node and browsers.
 *
 *   import { connect, topic } from "@outboxhub/client";      // a hub also serves it at /outboxhub.js
 *   const hub = await connect("ws://127.0.0.1:8090/", { token });
 *   const { id, seq } = await hub.publish("orders.paid", { order: 42 }, { key: "42" });
 *   await hub.subscribe("orders.*", "billing", async (event, ctx) => { ... }); // ACK when it resolves
 *
 * The API is the legacy PromClient protocol's (`new PromClient(url, token)`, connect, publish, subscribe,
 * unsubscribe, close), plus confirmed pipelined publishes, typed topics, message iterators, reconnect with
 * ordered re-send under the same event ids, token refresh, and one error class per error code.
 * docs/client-js.md describes it. In Node before v22 install `ws` (an optional peer dependency).
 */
export { CLOSE_AUTH_FAILED, CLOSE_CODES, CLOSE_TOKEN_EXPIRED, ERROR_CODES, type ErrorCode, isErrorCode } from "./outboxhub/codes.js";
export { AuthFailed, BadRequest, ClientClosed, errorFromCode, Forbidden, HubConnectionError, HubError, InternalError, NotAuthenticated, NotSubscribed, RateLimited, TokenExpired, TooLarge, Unavailable, } from "./outboxhub/errors.js";
export { connect, OutboxHubClient, type Subscription } from "./outboxhub/client.js";
/** The legacy PromClient protocol's name for the client. */
export { OutboxHubClient as PromClient } from "./outboxhub/client.js";
export { Message, MessageStream, type NackOptions } from "./outboxhub/messages.js";
export { getToken, refreshDelayMs, type TokenProvider, type TokenSource } from "./outboxhub/token.js";
export { type Topic, topic } from "./outboxhub/topic.js";
export type { ClientOptions, ClientState, DeliveryContext, HandlerContext, Handler, HubEvent, PublishOpts, PublishResult, StartPosition, SubscribeOpts, WebSocketClass, WebSocketLike, } from "./outboxhub/types.js";
export { uuidv7 } from "./outboxhub/uuid.js";
