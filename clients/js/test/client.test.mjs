// Node tests of @outboxhub/client against a real hub, with the `ws` package as the WebSocket (helpers.mjs).
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";

import {
  BadRequest,
  Forbidden,
  HubError,
  OutboxHubClient,
  PromClient,
  connect,
  topic as typedTopic,
  uuidv7,
} from "@outboxhub/client";
import { T, env, topicFor, trackedSockets, waitFor } from "./helpers.mjs";

const URL = env.url;
const TOKEN = env.token;
const LIMITED = env.limited;

test("confirmed publish resolves with id, seq and duplicate", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  try {
    const topic = topicFor("publish");
    const first = await hub.publish(topic, { n: 1 });
    assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(typeof first.seq, "number");
    assert.equal(first.duplicate, false);
    const second = await hub.publish(topic, { n: 2 });
    assert.ok(second.seq > first.seq, "seq increases");
    const id = uuidv7();
    const a = await hub.publish(topic, { n: 3 }, { id, key: "k" });
    const b = await hub.publish(topic, { n: 3 }, { id, key: "k" });
    assert.deepEqual([a.id, b.id, b.seq, a.duplicate, b.duplicate], [id, id, a.seq, false, true]);
  } finally {
    hub.close();
  }
});

test("a refused publish rejects with the hub's error code", T, async () => {
  const hub = await connect(URL, { token: LIMITED, WebSocket });
  try {
    await hub.publish("js.allowed.x", 1);
    await assert.rejects(hub.publish("js.denied.x", 1), (e) => e instanceof Forbidden && e.code === "forbidden");
    await assert.rejects(hub.publish("bad..topic", 1), (e) => e instanceof BadRequest && e instanceof HubError);
  } finally {
    hub.close();
  }
});

test("a bad token makes connect reject with jwt_invalid", T, async () => {
  const hub = new OutboxHubClient(URL, { token: "not-a-jwt", WebSocket, reconnect: true });
  await assert.rejects(hub.connect(), (e) => e instanceof HubError && e.code === "jwt_invalid");
  assert.equal(hub.state, "idle");
  hub.close();
});

test("group subscription: typed handler, ACK on resolve, NACK on throw (redelivered)", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  try {
    const topic = topicFor("group");
    for (let i = 0; i < 5; i++) await hub.publish(topic, { i }, { key: `k${i}` });
    const seen = [];
    let failedOnce = false;
    await hub.subscribe(
      topic,
      "g1",
      async (event, ctx) => {
        if (event.payload.i === 2 && !failedOnce) {
          failedOnce = true;
          throw new Error("try again");
        }
        seen.push([event.payload.i, ctx.attempt, ctx.redelivered, event.key, event.topic]);
      },
      { start: "earliest", ack_timeout_ms: 5000 },
    );
    await waitFor(() => seen.length === 5, "5 handled events");
    const byI = new Map(seen.map((s) => [s[0], s]));
    assert.deepEqual([...byI.keys()].sort(), [0, 1, 2, 3, 4]);
    assert.deepEqual(byI.get(2).slice(1, 3), [2, true], "the NACKed event came back as attempt 2");
    assert.deepEqual(byI.get(0), [0, 1, false, "k0", topic]);
  } finally {
    hub.close();
  }
});

test("group-less subscription gets live events; unsubscribe stops them", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  try {
    const topic = topicFor("live");
    const got = [];
    await hub.subscribe(`${topic.split(".").slice(0, 2).join(".")}.*`, null, (e) => {
      got.push(e.payload);
    });
    await hub.publish(topic, "a");
    await waitFor(() => got.length === 1, "the live event");
    assert.deepEqual(got, ["a"]);
    await hub.unsubscribe(`${topic.split(".").slice(0, 2).join(".")}.*`, null);
    await hub.publish(topic, "b");
    // a marker subscription proves the hub has delivered everything published before it
    const marker = [];
    await hub.subscribe(topic, null, (e) => marker.push(e.payload));
    await hub.publish(topic, "c");
    await waitFor(() => marker.length === 1, "the marker event");
    assert.deepEqual(got, ["a"], "nothing after unsubscribe");
  } finally {
    hub.close();
  }
});

test("reconnect: re-AUTH, re-subscribe, and publishes made while offline are confirmed once", T, async () => {
  const { sockets, Tracked } = trackedSockets();
  const states = [];
  let tokenCalls = 0;
  const hub = new OutboxHubClient(URL, {
    token: () => {
      tokenCalls += 1;
      return TOKEN;
    },
    WebSocket: Tracked,
    backoff: { initialMs: 20, maxMs: 100 },
    onState: (s) => states.push(s),
  });
  await hub.connect();
  try {
    const topic = topicFor("reconnect");
    const got = [];
    await hub.subscribe(topic, "rg", (e) => {
      got.push(e.payload);
    }, { start: "earliest" });
    await hub.publish(topic, 1);
    await waitFor(() => got.includes(1), "event 1");

    sockets[0].terminate(); // the network drops: no close handshake
    await waitFor(() => hub.state === "reconnecting", "state reconnecting");
    const offline = hub.publish(topic, 2); // queued while offline, sent after the reconnect
    await waitFor(() => hub.state === "open", "state open again");
    const result = await offline;
    assert.equal(result.duplicate, false);
    await hub.publish(topic, 3);
    await waitFor(() => got.includes(2) && got.includes(3), "events 2 and 3 through the renewed subscription");
    assert.equal(sockets.length, 2, "one new socket");
    assert.equal(tokenCalls, 2, "the token function is asked again on reconnect");
    assert.deepEqual(states.slice(0, 4), ["connecting", "open", "reconnecting", "open"]);
    assert.equal(got.filter((p) => p === 2).length >= 1, true);
  } finally {
    hub.close();
  }
});

test("a publish in flight when the connection drops is re-sent with the same id", T, async () => {
  const { sockets, Tracked } = trackedSockets();
  const hub = await connect(URL, { token: TOKEN, WebSocket: Tracked, backoff: { initialMs: 20, maxMs: 50 } });
  try {
    const topic = topicFor("inflight");
    const id = uuidv7();
    const pending = hub.publish(topic, "x", { id });
    sockets[0].terminate(); // maybe before, maybe after the hub stored it: either way exactly one event
    const result = await pending;
    assert.equal(result.id, id);
    const again = await hub.publish(topic, "x", { id });
    assert.equal(again.seq, result.seq);
    assert.equal(again.duplicate, true);
  } finally {
    hub.close();
  }
});

test("close() rejects what is pending and refuses new work", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  hub.close();
  assert.equal(hub.state, "closed");
  await assert.rejects(hub.publish("js.closed.x", 1), (e) => e.code === "closed");
  await assert.rejects(hub.connect(), (e) => e.code === "closed");
});

test("the legacy PromClient API works unchanged", T, async () => {
  const hadGlobal = "WebSocket" in globalThis;
  const previous = globalThis.WebSocket;
  globalThis.WebSocket = WebSocket; // what a browser (or Node >= 22) provides
  const client = new PromClient(URL, TOKEN);
  await client.connect();
  try {
    const topic = topicFor("legacy");
    const got = [];
    await client.subscribe(topic, "legacy-group", (e) => {
      got.push(e.payload.msg);
    }, { start: "earliest" });
    await client.publish(topic, { msg: "hello" }, { headers: { a: "b" } });
    await waitFor(() => got.length === 1, "the event");
    assert.deepEqual(got, ["hello"]);
    await client.unsubscribe(topic, "legacy-group");
  } finally {
    client.close();
    if (hadGlobal) globalThis.WebSocket = previous;
    else delete globalThis.WebSocket;
  }
});

test("messages(): an async iterator of messages settled with ack() / nack()", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  try {
    const topic = topicFor("iter");
    for (let i = 0; i < 3; i++) await hub.publish(topic, { i });
    const stream = await hub.messages(topic, "it", { start: "earliest" });
    const seen = [];
    let nacked = false;
    for await (const msg of stream) {
      if (msg.payload.i === 1 && !nacked) {
        nacked = true;
        msg.nack({ reason: "later", delayMs: 0 });
        continue;
      }
      seen.push([msg.payload.i, msg.attempt]);
      msg.ack();
      assert.throws(() => msg.ack(), /settle it once/);
      if (seen.length === 3) break; // leaving the loop unsubscribes
    }
    assert.deepEqual(seen.map((s) => s[0]).sort(), [0, 1, 2]);
    assert.deepEqual(seen.find((s) => s[0] === 1), [1, 2], "the NACKed message came back as attempt 2");
    assert.equal((await stream.next()).done, true);
  } finally {
    await hub.close();
  }
});

test("a typed topic's decode NACKs a payload that does not decode; the handler never sees it", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  try {
    const name = topicFor("typed");
    const State = typedTopic(name, {
      decode: (raw) => {
        if (typeof raw?.pid !== "number") throw new Error("pid must be a number");
        return raw;
      },
    });
    await hub.publish(State, { pid: "nope" });
    await hub.publish(State, { pid: 7 });
    const got = [];
    await hub.subscribe(State, "typed", (event) => void got.push(event.payload.pid), {
      start: "earliest",
      max_deliver: 1,
    });
    await waitFor(() => got.length === 1, "the good event");
    // max_deliver 1: the bad one is now a dead letter carrying the decode error as its reason
    const dead = [];
    await hub.subscribe(`dlq.typed.${name}`, "dead-reader", (event) => void dead.push(event), { start: "earliest" });
    await waitFor(() => dead.length === 1, "the dead letter");
    assert.deepEqual(got, [7]);
    assert.match(dead[0].headers["x-reason"], /does not decode: pid must be a number/);
  } finally {
    await hub.close();
  }
});

test("close() drains: publishes in flight are confirmed before the socket closes", T, async () => {
  const hub = await connect(URL, { token: TOKEN, WebSocket });
  const topic = topicFor("drain");
  const publishes = Array.from({ length: 200 }, (_, i) => hub.publish(topic, i));
  const closing = hub.close();
  assert.equal(hub.state, "closing");
  await assert.rejects(hub.publish(topic, "late"), (e) => e.code === "closed");
  const results = await Promise.all(publishes);
  await closing;
  assert.equal(hub.state, "closed");
  assert.equal(new Set(results.map((r) => r.seq)).size, 200);
});
