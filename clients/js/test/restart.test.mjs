// A hub SIGKILLed and restarted under a pipelined publisher: every publish is confirmed exactly once and no
// event is stored twice (tests/test_ops_js_client.py also counts the rows in the hub's SQLite file).
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";

import { OutboxHubClient } from "@outboxhub/client";
import { mintToken, sleep, startHub, waitFor } from "./helpers.mjs";

const N = Number(process.env.OUTBOXHUB_KILL_COUNT ?? 3000);

test("SIGKILL + restart under a pipelined publisher: each publish confirmed once, none stored twice", { timeout: 120_000 }, async () => {
  const url = process.env.OUTBOXHUB_SERVE_WS_URL;
  const topic = process.env.OUTBOXHUB_KILL_TOPIC;
  assert.ok(url && topic, "run through tests/test_ops_js_client.py");
  let hubProcess = await startHub();
  const states = [];
  const client = new OutboxHubClient(url, {
    token: () => mintToken(),
    WebSocket,
    backoff: { initialMs: 50, maxMs: 500 },
    maxInFlight: 256,
    onState: (s) => states.push(s),
    onError: () => {},
  });
  try {
    await client.connect();
    const confirmations = new Array(N).fill(0);
    const results = new Array(N);
    const all = [];
    for (let i = 0; i < N; i++) {
      all.push(
        client.publish(topic, { n: i }, { key: `k${i % 7}` }).then((r) => {
          confirmations[i] += 1;
          results[i] = r;
        }),
      );
      if (i % 100 === 99) await sleep(1); // let replies in: the kill lands while publishes are in flight
    }
    await waitFor(() => confirmations.filter(Boolean).length >= N / 4, "a quarter confirmed", 60_000);
    hubProcess.kill("SIGKILL");
    await new Promise((r) => hubProcess.once("exit", r));
    const confirmedBeforeRestart = confirmations.filter(Boolean).length;
    hubProcess = await startHub();
    await Promise.all(all);
    assert.ok(confirmedBeforeRestart < N, "the kill happened while publishes were unconfirmed");
    assert.ok(states.includes("reconnecting"), "the client saw the hub go");
    assert.ok(confirmations.every((c) => c === 1), "every publish confirmed exactly once");
    assert.equal(new Set(results.map((r) => r.id)).size, N, "N distinct event ids");
    assert.equal(new Set(results.map((r) => r.seq)).size, N, "N distinct seqs");
    assert.ok(results.every((r) => r.duplicate === false), "a client-made id re-sent is not a duplicate");
    assert.equal(client.reconnects, 1);
  } finally {
    await client.close({ drain: false });
    hubProcess.kill("SIGTERM");
    await new Promise((r) => (hubProcess.exitCode !== null ? r() : hubProcess.once("exit", r)));
  }
});
