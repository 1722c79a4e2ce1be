// Compiled (never run) by `tsc -p examples/tsconfig.json` (test/types.test.mjs): the package's .d.ts must
// type-check and its generics must reject misuse. Each @ts-expect-error line fails the build if it stops
// being an error.
import {
  connect,
  Forbidden,
  HubError,
  OutboxHubClient,
  PromClient,
  RateLimited,
  topic,
  type HubEvent,
  type PublishResult,
} from "@outboxhub/client";

interface ProcessState {
  host: string;
  pid: number;
  state: "running" | "stopped";
}

export async function usage(url: string, token: string): Promise<void> {
  const hub: OutboxHubClient = await connect(url, { token, onState: (s) => void s.toUpperCase() });
  const result: PublishResult = await hub.publish<ProcessState>("process.state", { host: "a", pid: 1, state: "running" });
  const seq: number = result.seq;
  void seq;
  // @ts-expect-error the payload does not match the declared type
  await hub.publish<ProcessState>("process.state", { host: "a", pid: "1", state: "running" });

  await hub.subscribe<ProcessState>("process.*", "ops", async (event, ctx) => {
    const pid: number = event.payload.pid;
    const attempt: number = ctx.attempt;
    // @ts-expect-error payload fields are typed
    const wrong: string = event.payload.pid;
    void [pid, attempt, wrong];
  }, { start: "earliest", max_in_flight: 10 });
  // @ts-expect-error start must be earliest, latest, a number, seq:N or ts:N
  await hub.subscribe("x", "g", () => undefined, { start: "yesterday" });

  const typed = (event: HubEvent<{ n: number }>): number => event.payload.n;
  void typed;
  const seed = new PromClient(url, token);
  await seed.connect();
  await seed.unsubscribe("process.*", "ops");
  seed.close();
  try {
    await hub.publish("x", 1);
  } catch (error) {
    if (error instanceof HubError) void error.code.length;
  }
}

export async function typedTopics(hub: OutboxHubClient): Promise<void> {
  const STATE = topic<ProcessState>("process.state");
  await hub.publish(STATE, { host: "a", pid: 1, state: "stopped" });
  // @ts-expect-error a typed topic takes only its payload type
  await hub.publish(STATE, { host: "a", pid: 1, state: "paused" });
  await hub.subscribe(STATE, "ops", (event) => {
    const state: "running" | "stopped" = event.payload.state;
    void state;
  });
  const stream = await hub.messages(STATE, "ops", { start: "earliest" });
  for await (const msg of stream) {
    const host: string = msg.payload.host;
    void host;
    // @ts-expect-error nack takes options, not a string
    msg.nack("busy");
    msg.nack({ reason: "busy", delayMs: 1000 });
    break;
  }
  try {
    await hub.publish(STATE, { host: "b", pid: 2, state: "running" });
  } catch (error) {
    if (error instanceof RateLimited) void error.retryAfterMs;
    else if (error instanceof Forbidden) void error.msg;
  }
  await hub.close();
}
