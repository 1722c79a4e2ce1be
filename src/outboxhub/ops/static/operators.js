// The dashboard's operator views: charts (uPlot, vendored as uPlot.iife.min.js with uPlot.LICENSE), dead
// letters with redrive/purge, group reset, and connections with close. Every action asks for a
// confirmation first and goes through the ops API with the signed-in token (ops:write for actions).
// Everything from the hub is written with textContent, never as HTML.

const SERIES_MS = 5000;
const SPARK = { width: 160, height: 36 };

let ctx; // {api, el, cell, time, showError, refresh}
let charts = []; // uPlot instances, destroyed before each redraw
let seriesTimer;
let dlqGroup = null;

export function initOperators(context) {
  ctx = context;
  document.getElementById("dlq-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    dlqGroup = document.getElementById("dlq-group").value.trim() || null;
    refreshDeadLetters();
  });
  document.getElementById("dlq-redrive-all").addEventListener("click", () => redrive("all"));
  document.getElementById("dlq-purge").addEventListener("click", purge);
}

export function startOperators() {
  refreshSeries();
  clearInterval(seriesTimer);
  seriesTimer = setInterval(refreshSeries, SERIES_MS);
}

export function stopOperators() {
  clearInterval(seriesTimer);
  for (const chart of charts) chart.destroy();
  charts = [];
}

export async function refreshOperators() {
  await Promise.all([refreshConnections(), dlqGroup ? refreshDeadLetters() : null]);
}

function post(path, body) {
  return ctx.api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function note(text) {
  document.getElementById("ops-result").textContent = text;
}

// -- charts ------------------------------------------------------------------------------------------------

function chart(target, title, names, xs, ys, size) {
  const opts = {
    title,
    width: size.width,
    height: size.height,
    series: [{}, ...names.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5 }))],
    axes: size.spark ? [{ show: false }, { show: false }] : undefined,
    legend: { show: !size.spark },
    cursor: { show: !size.spark },
    scales: { x: { time: true } },
  };
  const made = new window.uPlot(opts, [xs.map((t) => t / 1000), ...ys], target);
  charts.push(made);
  return made;
}

const PALETTE = ["#2563eb", "#15803d", "#b91c1c", "#a16207", "#7c3aed", "#0e7490", "#be185d", "#4b5563"];

async function refreshSeries() {
  let data;
  try {
    data = await ctx.api("/series");
  } catch (error) {
    ctx.showError(error);
    return;
  }
  for (const made of charts) made.destroy();
  charts = [];
  const big = { width: 560, height: 220 };
  const rates = document.getElementById("chart-rates");
  const lag = document.getElementById("chart-lag");
  rates.replaceChildren();
  lag.replaceChildren();
  chart(rates, "events/s", ["published", "delivered"], data.ts, [data.publishRate, data.deliverRate], big);
  const groups = Object.keys(data.groups);
  chart(lag, "group lag (events)", groups, data.lagTs, groups.map((g) => data.groups[g]), big);
  sparklines("spark-topics", data.topics, data.ts, "topic");
  sparklines("spark-groups", data.groups, data.lagTs, "group");
  document.getElementById("charts-empty").hidden = data.lagTs.length > 1;
}

function sparklines(id, byName, xs, kind) {
  const container = document.getElementById(id);
  container.replaceChildren();
  for (const [name, values] of Object.entries(byName)) {
    const last = values.length ? values[values.length - 1] : null;
    const box = ctx.el("div", { class: "spark", [`data-${kind}`]: name });
    const label = ctx.el("span", { class: "spark-label", text: name });
    const value = ctx.el("b", { class: "spark-value", text: last === null ? "—" : String(last) });
    const plot = ctx.el("div", { class: "spark-plot" });
    box.append(label, plot, value);
    container.append(box);
    chart(plot, "", [name], xs, [values], { ...SPARK, spark: true });
  }
  if (!container.children.length) {
    container.append(ctx.el("p", { class: "muted", text: `No ${kind}s yet.` }));
  }
}

// -- groups: reset -----------------------------------------------------------------------------------------

export function resetButton(g) {
  return ctx.el("button", {
    type: "button",
    class: "reset secondary",
    text: "Reset…",
    onclick: async (ev) => {
      const to = prompt(
        `Reset group ${g.group} on ${g.pattern} to: earliest, latest, a seq, or ts:<ms>`,
        "earliest",
      );
      if (to === null || !to.trim()) return;
      const position = /^\d+$/.test(to.trim()) ? Number(to.trim()) : to.trim();
      if (!confirm(`Reset ${g.group} on ${g.pattern} to ${to.trim()}? In-flight deliveries are released.`)) {
        return;
      }
      ev.currentTarget.disabled = true;
      try {
        const r = await post("/groups/reset", { pattern: g.pattern, group: g.group, to: position });
        note(`group ${r.group} reset to ${r.to} (frontier ${r.frontier})`);
      } catch (error) {
        ctx.showError(error);
      }
      await ctx.refresh();
    },
  });
}

// -- dead letters ------------------------------------------------------------------------------------------

async function refreshDeadLetters() {
  const table = document.getElementById("dlq-table");
  const info = document.getElementById("dlq-info");
  if (!dlqGroup) return;
  let data;
  try {
    data = await ctx.api(`/dlq?group=${encodeURIComponent(dlqGroup)}`);
  } catch (error) {
    ctx.showError(error);
    return;
  }
  table.hidden = false;
  table.tBodies[0].replaceChildren(
    ...data.deadLetters.map((x) =>
      ctx.el(
        "tr",
        { "data-id": x.id },
        ctx.cell(x.seq, "num"),
        ctx.cell(x.topic),
        ctx.cell(x.originalId),
        ctx.cell(x.attempts, "num"),
        ctx.cell(x.lastError, "err"),
        ctx.cell(x.preview, "payload"),
        ctx.cell(x.redriven ? "yes" : "", "redriven"),
        ctx.el(
          "td",
          {},
          ctx.el("button", {
            type: "button",
            class: "redrive secondary",
            "data-id": x.id,
            text: "Redrive",
            onclick: () => redrive([x.id]),
          }),
        ),
      ),
    ),
  );
  const parts = [`${data.deadLetters.length} dead letter(s) of ${data.group}`];
  if (data.purgedThrough) parts.push(`purged through seq ${data.purgedThrough}`);
  if (data.hidden) parts.push(`${data.hidden} not readable with this token`);
  info.textContent = parts.join("; ");
}

async function redrive(ids) {
  if (!dlqGroup) return;
  const what = ids === "all" ? `all dead letters of ${dlqGroup}` : `dead letter ${ids[0]}`;
  if (!confirm(`Redrive ${what} to the original topic?`)) return;
  try {
    const r = await post("/dlq/redrive", { group: dlqGroup, ids });
    note(`redrove ${r.published} dead letter(s); ${r.duplicates} already redriven`);
  } catch (error) {
    ctx.showError(error);
  }
  await refreshDeadLetters();
}

async function purge() {
  if (!dlqGroup) return;
  if (!confirm(`Purge the dead letters of ${dlqGroup}? They stay in the log but are no longer listed.`)) {
    return;
  }
  try {
    const r = await post("/dlq/purge", { group: dlqGroup });
    note(`purged ${r.purged} dead letter(s) through seq ${r.purgedThrough}`);
  } catch (error) {
    ctx.showError(error);
  }
  await refreshDeadLetters();
}

// -- connections -------------------------------------------------------------------------------------------

async function refreshConnections() {
  let data;
  try {
    data = await ctx.api("/connections");
  } catch (error) {
    ctx.showError(error);
    return;
  }
  document.getElementById("connections-table").tBodies[0].replaceChildren(
    ...data.connections.map((c) => {
      const subs = c.subscriptions.map((s) => s.pattern + (s.group ? ` (${s.group})` : ""));
      if (c.hiddenSubscriptions) subs.push(`+${c.hiddenSubscriptions} hidden`);
      return ctx.el(
        "tr",
        { "data-conn": c.id, "data-sub": c.sub ?? "" },
        ctx.cell(c.sub),
        ctx.cell(c.remote),
        ctx.cell(ctx.time(c.connectedAt)),
        ctx.cell(subs.join(", ")),
        ctx.cell(c.queueDepth, "num"),
        ctx.cell(c.publishRate, "num"),
        ctx.cell(c.deliverRate, "num"),
        ctx.el(
          "td",
          {},
          ctx.el("button", {
            type: "button",
            class: "close-conn danger",
            text: "Close",
            onclick: async (ev) => {
              if (!confirm(`Close the connection of ${c.sub ?? c.id}?`)) return;
              ev.currentTarget.disabled = true;
              try {
                await post(`/connections/${encodeURIComponent(c.id)}/close`, {});
                note(`closed ${c.id}`);
              } catch (error) {
                ctx.showError(error);
              }
              await refreshConnections();
            },
          }),
        ),
      );
    }),
  );
}
