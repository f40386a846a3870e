// The live page: counts from /api/v1/stream (no reloads); history, late and stuck runs and
// health figures fetched again at most every two seconds while anything changes.
"use strict";
const COLORS = { SCHEDULED: "#98a2b3", PENDING: "#fdb022", RUNNING: "#2e90fa", COMPLETED: "#12b76a",
  FAILED: "#f04438", CANCELLED: "#667085", CRASHED: "#b42318", PAUSED: "#7a5af8", CANCELLING: "#f79009" };
const TYPES = Object.keys(COLORS);
const $ = (id) => document.getElementById(id);
const text = (el, value) => { if (el.textContent !== String(value)) el.textContent = value; };

function age(seconds) {
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return Math.round(seconds / 86400) + " d";
}

function showCounts(doc) {
  const runs = doc.flow_runs.by_state_type;
  const max = Math.max(1, ...TYPES.map((t) => runs[t] || 0));
  const bars = $("bars");
  for (const type of TYPES) {
    let row = document.getElementById("row-" + type);
    if (!row) {
      row = document.createElement("div");
      row.className = "row"; row.id = "row-" + type;
      row.innerHTML = `<span>${type}</span><span class="track"><span class="fill" style="display:block;background:${COLORS[type]}"></span></span><span class="n" data-state="${type}" id="count-${type}"></span>`;
      bars.appendChild(row);
    }
    const n = runs[type] || 0;
    row.querySelector(".fill").style.width = (100 * n / max) + "%";
    text(row.querySelector(".n"), n);
  }
  text($("total"), doc.flow_runs.total + " in all");
  text($("received"), doc.events.received);
  text($("connected"), doc.stream.connected ? "connected" : doc.stream.reconnects ? "reconnecting" : "not connected (replay, or starting)");
  text($("last-event"), doc.stream.last_event_occurred ? doc.stream.last_event_occurred.replace("T", " ").slice(0, 19) : "none");
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function showHistory(doc) {
  const totals = doc.minutes.map((m) => Object.values(m.flow_runs).reduce((a, b) => a + b, 0));
  const svg = $("spark");
  const max = Math.max(1, ...totals);
  const step = 600 / Math.max(1, totals.length - 1);
  const points = totals.map((n, i) => `${(i * step).toFixed(1)},${(78 - 74 * n / max).toFixed(1)}`).join(" ");
  const failed = doc.minutes.map((m, i) => `${(i * step).toFixed(1)},${(78 - 74 * (m.flow_runs.FAILED || 0) / max).toFixed(1)}`).join(" ");
  svg.innerHTML = `<polyline fill="none" stroke="#2e90fa" stroke-width="2" points="${points}"/>` +
    `<polyline fill="none" stroke="#f04438" stroke-width="1.5" points="${failed}"/>`;
  const last = doc.minutes.length ? doc.minutes[doc.minutes.length - 1] : null;
  text($("span"), doc.minutes.length ? `${doc.minutes.length} min to ${last.start.slice(11, 16)} UTC` : "no entries yet");
  text($("legend"), last ? "blue: all entries, red: FAILED; newest minute: " +
    (Object.entries(last.flow_runs).map(([t, n]) => `${t} ${n}`).join(", ") || "none") : "");
}

function cell(value) { const td = document.createElement("td"); td.textContent = value ?? "–"; return td; }

function showRuns(tbody, runs, columns, empty) {
  const rows = runs.map((r) => {
    const tr = document.createElement("tr");
    for (const column of columns) tr.appendChild(cell(column(r)));
    return tr;
  });
  if (!rows.length) { const tr = document.createElement("tr"); const td = cell(empty); td.className = "empty"; td.colSpan = columns.length; tr.appendChild(td); rows.push(tr); }
  tbody.replaceChildren(...rows);
}

function metric(textBody, name) {
  const line = textBody.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{}"));
  return line ? Number(line.split(" ").pop()) : null;
}

// The sum of every sample of a counter family (0 when it has none yet).
function metricSum(textBody, name) {
  return textBody
    .split("\n")
    .filter((l) => l.startsWith(name + " ") || l.startsWith(name + "{"))
    .reduce((total, l) => total + Number(l.split(" ").pop()), 0);
}

async function refresh() {
  try {
    const [history, late, pending, cancelling, metrics] = await Promise.all([
      getJson("/api/v1/history"),
      getJson("/api/v1/resources?state_type=SCHEDULED&state_name=Late&limit=20"),
      getJson("/api/v1/resources?state_type=PENDING&older_than=10m&limit=50"),
      getJson("/api/v1/resources?state_type=CANCELLING&older_than=10m&limit=50"),
      fetch("/metrics", { cache: "no-store" }).then((r) => r.text()),
    ]);
    showHistory(history);
    const name = (r) => r.name || r.id;
    showRuns($("late"), late.resources, [name, (r) => r.labels.flow, (r) => r.labels.deployment, (r) => age(r.state.age_seconds)], "no late runs");
    const stuck = pending.resources.concat(cancelling.resources).sort((a, b) => b.state.age_seconds - a.state.age_seconds);
    showRuns($("stuck"), stuck, [name, (r) => r.state.name, (r) => r.labels.flow, (r) => r.labels.deployment, (r) => r.labels.work_pool, (r) => age(r.state.age_seconds)], "no stuck runs");
    const sum = metric(metrics, "prefect_exporter_event_delay_seconds_sum");
    const count = metric(metrics, "prefect_exporter_event_delay_seconds_count");
    text($("delay"), count ? (sum / count).toFixed(3) + " s" : "–");
    text($("repaired"), metric(metrics, "prefect_exporter_events_repaired_total") ?? "–");
    text($("reconciliations"), metric(metrics, "prefect_exporter_reconciliations_total") ?? "–");
    text($("rest-requests"), metricSum(metrics, "prefect_exporter_api_requests_total"));
  } catch (e) {
    console.warn(e);
  }
}

let refreshing = null, again = false;
function scheduleRefresh() {
  if (refreshing) { again = true; return; }
  refreshing = refresh().then(() => new Promise((r) => setTimeout(r, 2000))).then(() => {
    refreshing = null;
    if (again) { again = false; scheduleRefresh(); }
  });
}

const source = new EventSource("/api/v1/stream");
source.addEventListener("counts", (e) => {
  showCounts(JSON.parse(e.data));
  $("link").className = "dot on";
  scheduleRefresh();
});
source.addEventListener("open", () => { $("link").className = "dot on"; });
source.addEventListener("error", () => { $("link").className = "dot off"; });
