// The outboxhub dashboard: one page, no build step. Reads the ops API with the token the operator pastes
// (kept in sessionStorage only) and shows a live view of a pattern through outboxhub.js over /ws.
// Everything from the hub is written with textContent, never as HTML.
import { OutboxHubClient } from "./outboxhub.js";
import { initOperators, refreshOperators, resetButton, startOperators, stopOperators } from "./operators.js";

const TOKEN_KEY = "outboxhub.token";
const PATTERN_KEY = "outboxhub.livePattern";
const REFRESH_MS = 2000;
const HISTORY_EVENTS = 10000; // the live view starts from the latest event per key among these
const PAYLOAD_CHARS = 400;

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let refreshTimer;
let live; // {client, pattern, rows: Map<key, {event, tr}>}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function cell(value, cls) {
  return el("td", { class: cls, text: value === null || value === undefined ? "—" : String(value) });
}

function time(ts) {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString()}`;
}

function age(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function short(value) {
  const text = JSON.stringify(value) ?? "null";
  return text.length > PAYLOAD_CHARS ? `${text.slice(0, PAYLOAD_CHARS)}…` : text;
}

class Unauthorized extends Error {}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Unauthorized(body.error ?? "token refused");
  if (!response.ok) throw new Error(body.error ?? `${response.status} ${response.statusText}`);
  return body;
}

function showError(error) {
  if (error instanceof Unauthorized) {
    signOut(`Signed out: ${error.message}`);
    return;
  }
  $("error").textContent = error ? String(error.message ?? error) : "";
}

// -- sign in / out -----------------------------------------------------------------------------------------

async function signIn(candidate) {
  token = candidate;
  try {
    await api("/topics");
  } catch (error) {
    token = null;
    $("login-error").textContent =
      error instanceof Unauthorized ? `Token refused: ${error.message}` : String(error.message ?? error);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("login-error").textContent = "";
  $("token").value = "";
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  await refresh();
  refreshTimer = setInterval(refresh, REFRESH_MS);
  startOperators();
  watch(sessionStorage.getItem(PATTERN_KEY) || $("live-pattern").value);
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  clearInterval(refreshTimer);
  stopOperators();
  live?.client.close();
  live = undefined;
  $("app").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  setState("offline");
}

// -- tables ------------------------------------------------------------------------------------------------

async function refresh() {
  if (!token) return;
  try {
    const [topics, groups, outboxes] = await Promise.all([api("/topics"), api("/groups"), api("/outbox")]);
    renderTopics(topics);
    renderGroups(groups);
    renderOutboxes(outboxes);
    await refreshOperators();
    $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError(null);
  } catch (error) {
    showError(error);
  }
}

function renderTopics({ topics }) {
  $("topics-table").tBodies[0].replaceChildren(
    ...topics.map((t) =>
      el("tr", { "data-topic": t.topic }, cell(t.topic), cell(t.count, "num"), cell(t.lastSeq, "num"), cell(time(t.lastTs))),
    ),
  );
}

function renderGroups({ groups }) {
  $("groups-table").tBodies[0].replaceChildren(
    ...groups.map((g) =>
      el(
        "tr",
        { "data-group": `${g.pattern}::${g.group}` },
        cell(g.pattern),
        cell(g.group),
        cell(g.members, "num"),
        cell(g.inFlight, "num"),
        cell(g.lagCount, "num lag-count"),
        cell(g.lagMs, "num"),
        cell(g.deadLetters, "num"),
        el("td", {}, resetButton(g)),
      ),
    ),
  );
}

async function outboxAction(action, outbox, body, button) {
  if (button) button.disabled = true;
  try {
    await api(`/outbox/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ outbox, ...body }),
    });
  } catch (error) {
    showError(error);
  }
  await refresh();
}

function renderOutboxes({ outboxes }) {
  const container = $("outboxes");
  if (!outboxes.length) {
    container.replaceChildren(el("p", { class: "muted", text: "No outbox is drained by this hub." }));
    return;
  }
  container.replaceChildren(
    ...outboxes.map((o) => {
      const box = el("div", { class: "outbox", "data-outbox": o.name }, el("h3", { text: o.name }));
      if (!o.up) {
        box.append(el("p", { class: "error", text: o.error }));
        return box;
      }
      box.append(
        el(
          "div",
          { class: "stats" },
          el("span", {}, "pending ", el("b", { class: "pending", text: String(o.pending) })),
          el("span", {}, "claimed ", el("b", { class: "claimed", text: String(o.claimed) })),
          el("span", {}, "dead ", el("b", { class: "dead", text: String(o.dead) })),
          el("span", {}, "oldest pending ", el("b", { text: age(o.oldestPendingAgeMs) })),
        ),
      );
      if (!o.deadRecords.length) return box;
      const rows = o.deadRecords.map((r) =>
        el(
          "tr",
          { "data-id": r.id },
          cell(r.id),
          cell(r.topic),
          cell(r.key),
          cell(r.attempts, "num"),
          cell(r.lastErr, "err"),
          el(
            "td",
            {},
            el("button", {
              type: "button",
              class: "retry",
              "data-id": r.id,
              text: "Retry",
              onclick: (ev) => outboxAction("retry", o.name, { ids: [r.id] }, ev.currentTarget),
            }),
            " ",
            el("button", {
              type: "button",
              class: "purge danger",
              "data-id": r.id,
              text: "Purge",
              onclick: (ev) => {
                if (confirm(`Delete dead record ${r.id} for good?`)) {
                  outboxAction("purge", o.name, { ids: [r.id] }, ev.currentTarget);
                }
              },
            }),
          ),
        ),
      );
      box.append(
        el(
          "table",
          { class: "dead-records" },
          el(
            "thead",
            {},
            el("tr", {}, ...["id", "topic", "key", "attempts", "last error", ""].map((h) => el("th", { text: h }))),
          ),
          el("tbody", {}, ...rows),
        ),
        el("p", {}, el("button", {
          type: "button",
          class: "retry-all secondary",
          text: `Retry all ${o.dead} dead`,
          onclick: (ev) => outboxAction("retry", o.name, { ids: "all" }, ev.currentTarget),
        })),
      );
      return box;
    }),
  );
}

// -- live view ---------------------------------------------------------------------------------------------

function setState(state) {
  const badge = $("conn-state");
  badge.textContent = state === "open" ? "live" : state;
  badge.className = `badge ${state}`;
}

function upsert(event) {
  if (!live) return;
  const key = event.key ?? `(no key) ${event.id}`;
  const known = live.rows.get(key);
  if (known && known.event.seq >= event.seq) return;
  const tr = known?.tr ?? el("tr", { "data-key": key });
  tr.replaceChildren(
    cell(key),
    cell(event.topic),
    cell(event.seq, "num seq"),
    cell(time(event.ts)),
    cell(short(event.payload), "payload"),
  );
  if (!known) {
    const body = $("live-table").tBodies[0];
    const after = [...body.rows].find((row) => row.dataset.key > key);
    body.insertBefore(tr, after ?? null);
  }
  tr.classList.remove("flash");
  void tr.offsetWidth; // restart the highlight animation
  tr.classList.add("flash");
  live.rows.set(key, { event, tr });
  $("live-empty").hidden = true;
}

async function loadHistory(pattern) {
  const { lastSeq } = await api("/topics");
  const from = Math.max(1, lastSeq - HISTORY_EVENTS + 1);
  const response = await fetch(`/replay?pattern=${encodeURIComponent(pattern)}&from_seq=${from}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`history of ${pattern}: ${body.error ?? response.status}`);
  }
  for (const line of (await response.text()).split("\n")) {
    if (line) upsert(JSON.parse(line));
  }
}

async function watch(pattern) {
  live?.client.close();
  sessionStorage.setItem(PATTERN_KEY, pattern);
  $("live-pattern").value = pattern;
  $("live-table").tBodies[0].replaceChildren();
  $("live-empty").hidden = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = new OutboxHubClient(`${scheme}://${location.host}/ws`, {
    token: () => token,
    onState: (state) => {
      if (live?.client === client) setState(state);
    },
    onError: (error) => showError(error),
  });
  live = { client, pattern, rows: new Map() };
  setState("connecting");
  try {
    // Subscribe first, then read the history: an event in between shows up once (the newer seq wins).
    await client.subscribe(pattern, null, (event) => upsert(event));
    await loadHistory(pattern);
  } catch (error) {
    showError(error);
  }
}

// -- wiring ------------------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("token").value.trim());
});
$("signout").addEventListener("click", () => signOut());
$("live-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const pattern = $("live-pattern").value.trim();
  if (pattern) watch(pattern);
});

initOperators({ api, el, cell, time, showError, refresh });

if (token) signIn(token);
else signOut();
