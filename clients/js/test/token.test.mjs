// Token refresh: a provider's short-lived tokens are replaced on the open connection before they expire
// (the hub runs with --jwt-leeway-s 0, so an expired token closes the connection at once).
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";

import { OutboxHubClient, TokenExpired } from "@outboxhub/client";
import { T, env, mintToken, sleep, topicFor, waitFor } from "./helpers.mjs";

test("a token provider is asked again before exp and the connection survives", T, async () => {
  let calls = 0;
  const states = [];
  const client = new OutboxHubClient(env.url, {
    token: () => {
      calls += 1;
      return mintToken({ ttlS: 3 });
    },
    WebSocket,
    onState: (s) => states.push(s),
  });
  await client.connect();
  try {
    const topic = topicFor("refresh");
    await sleep(7_000); // more than two lifetimes of a 3 s token
    const result = await client.publish(topic, "still here");
    assert.equal(typeof result.seq, "number");
    assert.ok(client.tokenRefreshes >= 2, `refreshed ${client.tokenRefreshes} times`);
    assert.ok(calls >= 3, `the provider was called ${calls} times`);
    assert.equal(client.reconnects, 0, "refreshed on the open connection, never reconnected");
    assert.deepEqual(states, ["connecting", "open"]);
  } finally {
    await client.close();
  }
});

test("a fixed token that expires ends the client with TokenExpired (what the provider avoids)", T, async () => {
  const errors = [];
  const client = new OutboxHubClient(env.url, {
    token: mintToken({ ttlS: 2 }),
    WebSocket,
    onState: (s, d) => s === "closed" && errors.push(d),
    onError: () => {}, // the hub's ERR token_expired (no rid) before it closes
  });
  await client.connect();
  await waitFor(() => client.state === "closed", "the hub closing the expired connection", 10_000);
  assert.ok(errors[0] instanceof TokenExpired, String(errors[0]));
  await assert.rejects(client.publish("js.expired.x", 1), (e) => e.code === "closed");
});
