// A Node service with a typed topic: publishes process states and consumes them in a group.
//   OUTBOXHUB_URL=ws://127.0.0.1:8090/ OUTBOXHUB_TOKEN=... node typed-service.js   (after tsc)
import { connect, topic, TokenExpired } from "@outboxhub/client";

interface ProcessState {
  name: string;
  state: "up" | "down";
}

const STATE = topic<ProcessState>("process.state", {
  decode: (raw) => {
    const v = raw as Partial<ProcessState>;
    if (typeof v?.name !== "string" || (v.state !== "up" && v.state !== "down")) {
      throw new Error("expected {name: string, state: 'up' | 'down'}");
    }
    return v as ProcessState;
  },
});

export async function main(): Promise<void> {
  const url = process.env.OUTBOXHUB_URL ?? "ws://127.0.0.1:8090/";
  const hub = await connect(url, { token: async () => process.env.OUTBOXHUB_TOKEN ?? "" });
  const sub = await hub.subscribe(STATE, "ops", async (event, ctx) => {
    console.log(event.seq, event.payload.name, event.payload.state, ctx.attempt);
  }, { start: "earliest" });
  const { id, seq } = await hub.publish(STATE, { name: "db", state: "up" }, { key: "db" });
  console.log("stored", id, seq);
  await sub.unsubscribe();
  try {
    await hub.close(); // waits for what is in flight
  } catch (error) {
    if (error instanceof TokenExpired) console.error("token expired");
  }
}
