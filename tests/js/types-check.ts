// Compiled (never run) by `tsc -p tsconfig.json` in outboxhub.test.mjs: the .d.ts must type-check and its
// generics must reject misuse. Each @ts-expect-error line fails the build if it stops being an error.
import { connect, HubError, OutboxHubClient, PromClient, type HubEvent, type PublishResult } from "../../src/outboxhub/ops/static/outboxhub.js";

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
