// The Tlytics dashboard: plain JavaScript on the server's own read endpoints, no CDN.
"use strict";

const keyInput = document.getElementById("read-key");
keyInput.value = localStorage.getItem("tlytics-read-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("tlytics-read-key", keyInput.value); refresh(); });

const RANGES = { minute: 3600, hour: 86400, day: 30 * 86400, week: 182 * 86400 };
const QUARTER_HOUR_MS = 15 * 60 * 1000;

// Ranges on 15-minute boundaries let the server answer from its rollup table.
function alignedRange(seconds) {
  const until = new Date(Math.ceil(Date.now() / QUARTER_HOUR_MS) * QUARTER_HOUR_MS);
  return [new Date(until.getTime() - seconds * 1000), until];
}
let chart = null;

async function api(path) {
  const headers = keyInput.value ? { Authorization: "Bearer " + keyInput.value } : {};
  const response = await fetch(path, { headers });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(response.status + " " + (body.error || response.statusText));
  }
  return response.json();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const values of rows) {
    const row = body.insertRow();
    values.forEach((value, index) => cell(row, value, index === values.length - 1 && id === "latest" ? "data" : ""));
  }
}

async function drawChart() {
  const interval = document.getElementById("interval").value;
  const [since, until] = alignedRange(RANGES[interval]);
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const params = new URLSearchParams({ interval, tz, since: since.toISOString(), until: until.toISOString() });
  const stats = await api("/stats?" + params);
  const xs = stats.buckets.map((b) => Date.parse(b.start) / 1000);
  const ys = stats.buckets.map((b) => b.count);
  const element = document.getElementById("chart");
  const width = Math.max(300, element.clientWidth || 800);
  if (chart) chart.destroy();
  chart = new uPlot({ width, height: 260, series: [{}, { label: "events", stroke: "#3867d6", fill: "rgba(56,103,214,.12)" }],
                      axes: [{}, {}] }, [xs, ys], element);
  document.body.dataset.chartPoints = String(xs.length);
  document.body.dataset.chartEvents = String(ys.reduce((a, b) => a + b, 0));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [view, keys] = await Promise.all([api("/view?page_size=20"), api("/keys")]);
    document.getElementById("total").textContent = view.total.toLocaleString();
    fillTable("keys", keys.keys.slice(0, 10).map((k) => [k.key, k.count.toLocaleString(), k.last_seen]));
    fillTable("latest", view.events.map((e) => [e.timestamp, e.key, JSON.stringify(e.data)]));
    const property = document.getElementById("breakdown-property").value.trim();
    if (property) {
      const [since, until] = alignedRange(30 * 86400);
      const params = new URLSearchParams({ interval: "month", breakdown: property, limit: "10", since: since.toISOString(), until: until.toISOString() });
      const stats = await api("/stats?" + params);
      fillTable("breakdown", (stats.breakdown || []).map((b) => [b.other ? "(other)" : JSON.stringify(b.value), b.count.toLocaleString()]));
    }
    await drawChart();
    status.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (error) {
    status.textContent = "error: " + error.message;
  }
}

document.getElementById("interval").addEventListener("change", drawChart);
document.getElementById("breakdown-property").addEventListener("change", refresh);
refresh();
setInterval(refresh, 5000);
