// A hub SIGKILLed and restarted under a pipelined publisher: every publish is confirmed exactly once and no
// event is stored twice (tests/test_ops_js_client.py also counts the rows in the hub's SQLite file).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { test } from "node:test";
import { WebSocket } from "ws";

import { OutboxHubClient } from "@outboxhub/client";
import { mintToken, startHub, waitFor } from "./helpers.mjs";

const WINDOW = 300;

test("SIGKILL + restart under a pipelined publisher: each publish confirmed once, none stored twice", { timeout: 120_000 }, async () => {
  const url = process.env.OUTBOXHUB_SERVE_WS_URL;
  const topic = process.env.OUTBOXHUB_KILL_TOPIC;
  const report = process.env.OUTBOXHUB_KILL_REPORT; // the Python side then counts the rows in the store
  assert.ok(url && topic && report, "run through tests/test_ops_js_client.py");
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
    // A publisher that keeps WINDOW publishes unconfirmed until told to stop: whenever the kill lands,
    // hundreds are in flight (sent or queued), whatever the machine's speed.
    const confirmations = [];
    const results = [];
    const all = [];
    let confirmed = 0;
    let outstanding = 0;
    let stop = false;
    let wake;
    const publisher = (async () => {
      let n = 0;
      while (!stop) {
        const i = n++;
        outstanding += 1;
        const p = client.publish(topic, { n: i }, { key: `k${i % 7}` }).then((r) => {
          confirmations[i] = (confirmations[i] ?? 0) + 1;
          results[i] = r;
          confirmed += 1;
        });
        all.push(p.finally(() => {
          outstanding -= 1;
          wake?.();
        }));
        if (outstanding >= WINDOW) await new Promise((r) => (wake = r));
      }
      return n;
    })();
    await waitFor(() => confirmed >= 500, "500 confirmed", 60_000);
    const unconfirmedAtKill = outstanding;
    hubProcess.kill("SIGKILL");
    await new Promise((r) => hubProcess.once("exit", r));
    hubProcess = await startHub();
    const before = confirmed;
    await waitFor(() => confirmed >= before + 500, "500 more confirmed after the restart", 60_000);
    stop = true;
    wake?.();
    const total = await publisher;
    await Promise.all(all);
    assert.ok(unconfirmedAtKill > 0, "the kill happened while publishes were unconfirmed");
    assert.ok(states.includes("reconnecting"), "the client saw the hub go");
    assert.equal(confirmed, total);
    assert.ok(confirmations.length === total && confirmations.every((c) => c === 1), "each confirmed once");
    assert.equal(new Set(results.map((r) => r.id)).size, total, "distinct event ids");
    assert.equal(new Set(results.map((r) => r.seq)).size, total, "distinct seqs");
    assert.ok(results.every((r) => r.duplicate === false), "a client-made id re-sent is not a duplicate");
    assert.equal(client.reconnects, 1);
    writeFileSync(report, JSON.stringify({ topic, total, unconfirmedAtKill }));
  } finally {
    await client.close({ drain: false });
    hubProcess.kill("SIGTERM");
    await new Promise((r) => (hubProcess.exitCode !== null ? r() : hubProcess.once("exit", r)));
  }
});
