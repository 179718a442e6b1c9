// The Tlytics dashboard: plain JavaScript on the server's own endpoints, no CDN.
//
// The key: a share link carries it in the fragment (/#key=…), which the browser never sends,
// so it reaches no server log. The page reads it once, keeps it in sessionStorage (gone with
// the tab) and removes it from the address bar so it is not bookmarked or copied along.
// Which panels show depends on what the key may call, asked from GET /whoami: raw events
// (latest events) only when it may call `read` routes; a `stats` key sees aggregates only.
"use strict";

const KEY_STORAGE = "tlytics-key";
const RANGES = { minute: 3600, hour: 86400, day: 30 * 86400, week: 182 * 86400 };
const QUARTER_HOUR_MS = 15 * 60 * 1000;
const REFRESH_PERIOD_MS = 5000;

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");

// --- the key -----------------------------------------------------------------------------

function keyFromFragment() {
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    // decodeURIComponent, not URLSearchParams: a "+" in a key stays a "+".
    if (part.startsWith("key=")) {
      try {
        return decodeURIComponent(part.slice(4));
      } catch {
        return part.slice(4);
      }
    }
  }
  return null;
}

// Whether the address held a key (then kept, and removed from the address).
function takeKeyFromFragment() {
  const fromFragment = keyFromFragment();
  if (fromFragment === null) return false;
  sessionStorage.setItem(KEY_STORAGE, fromFragment);
  history.replaceState(null, "", location.pathname + location.search);
  keyInput.value = fromFragment;
  return true;
}

function loadKey() {
  // An earlier version kept the key in localStorage, where it outlived the tab: drop it.
  localStorage.removeItem("tlytics-read-key");
  if (!takeKeyFromFragment()) keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders(key) {
  return key ? { Authorization: "Bearer " + key } : {};
}

class ApiError extends Error {
  constructor(status, body) {
    super(status + " " + (body.error || "error") + (body.field ? " (" + body.field + ")" : ""));
    this.status = status;
    this.field = body.field;
  }
}

async function api(path, key = keyInput.value) {
  const response = await fetch(path, { headers: authHeaders(key) });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body);
  }
  return response.json();
}

// What `key` may do: its scope (null for no key or one the server does not know) and the
// levels of the routes it may call. A server from before scopes has no /whoami: there a key
// (or none, on a server without keys) that reads at all reads everything.
const BEFORE_SCOPES = { scope: null, allowed: new Set(["stats", "read"]), known: false };

async function accessOf(key) {
  try {
    const answer = await api("/whoami", key);
    return { scope: answer.scope, allowed: new Set(answer.allowed || []), known: true };
  } catch (error) {
    if (error.status === 404) return BEFORE_SCOPES;
    throw error;
  }
}

// --- state ---------------------------------------------------------------------------------

let access = BEFORE_SCOPES;
let chart = null;
let csvUrl = null;
let refreshNumber = 0;
let refreshing = false;
// Until /whoami has answered for the current key, the page asks for nothing else.
let accessLearned = false;

function canSeeRawEvents() {
  return access.allowed.has("read");
}

async function learnScope() {
  accessLearned = false;
  access = await accessOf(keyInput.value);
  accessLearned = true;
  const unknownKey = access.known && keyInput.value && access.scope === null;
  document.body.dataset.scope = access.scope || "";
  $("scope").textContent = unknownKey ? "unknown key" : access.scope || "";
  $("latest-panel").hidden = !canSeeRawEvents();
}

// --- filters -------------------------------------------------------------------------------

function addFilterRow(property = "", operator = ":", value = "") {
  const row = $("filter-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".filter-property").value = property;
  row.querySelector(".filter-operator").value = operator;
  row.querySelector(".filter-value").value = value;
  const showValue = () => { row.querySelector(".filter-value").hidden = row.querySelector(".filter-operator").value === ":*"; };
  row.querySelector(".filter-operator").addEventListener("change", showValue);
  row.querySelector(".filter-remove").addEventListener("click", () => { row.remove(); applyFilters(); });
  showValue();
  $("filter-rows").append(row);
}

// The `where` parameters of the conditions: data.x:v, data.x!=v, data.n>=10, data.x~text, data.x:*
function whereConditions() {
  const conditions = [];
  for (const row of document.querySelectorAll("#filter-rows .filter-row")) {
    let property = row.querySelector(".filter-property").value.trim();
    if (!property) continue;
    if (!property.startsWith("data.")) property = "data." + property;
    const operator = row.querySelector(".filter-operator").value;
    conditions.push(operator === ":*" ? property + ":*" : property + operator + row.querySelector(".filter-value").value);
  }
  return conditions;
}

// What the panels show: the conditions and the funnel as last applied, not as half typed
// (the 5-second refresh would otherwise send a condition still being written).
let appliedWhere = [];
let appliedFunnel = null;

function applyFilters() {
  appliedWhere = whereConditions();
  refresh();
}

function applyFunnel() {
  const steps = $("funnel-steps").value.split(",").map((s) => s.trim()).filter(Boolean);
  appliedFunnel = steps.length ? { steps: steps.join(","), by: $("funnel-by").value.trim(), within: $("funnel-within").value } : null;
  refresh();
}

function withFilters(params) {
  for (const condition of appliedWhere) params.append("where", condition);
  return params;
}

// --- figures -------------------------------------------------------------------------------

// Ranges on 15-minute boundaries let the server answer from its rollup table.
function alignedRange(seconds) {
  const until = new Date(Math.ceil(Date.now() / QUARTER_HOUR_MS) * QUARTER_HOUR_MS);
  return [new Date(until.getTime() - seconds * 1000), until];
}

function chartRange() {
  const interval = $("interval").value;
  const [since, until] = alignedRange(RANGES[interval]);
  return { interval, since: since.toISOString(), until: until.toISOString() };
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const values of rows) {
    const row = body.insertRow();
    values.forEach((value, index) => cell(row, value, index === values.length - 1 && id === "latest" ? "data" : ""));
  }
}

function showTotals(stats, uniqueAsked) {
  const total = stats.total ?? stats.buckets.reduce((sum, b) => sum + b.count, 0);
  $("total").textContent = total.toLocaleString();
  document.body.dataset.total = String(total);
  // A server without these features leaves them out of its answer: hide their tiles.
  $("unique-tile").hidden = uniqueAsked && stats.unique_total === undefined;
  $("unique-total").textContent = uniqueAsked ? (stats.unique_total ?? 0).toLocaleString() : "–";
  $("change-tile").hidden = !stats.previous;
  if (stats.previous) {
    const before = stats.previous.total;
    const change = $("change");
    change.className = "figure " + (total > before ? "up" : total < before ? "down" : "");
    change.textContent = before === 0 ? (total === 0 ? "±0" : "new") : (total >= before ? "+" : "") + (((total - before) / before) * 100).toFixed(1) + " %";
    $("previous-total").textContent = "previous period: " + before.toLocaleString();
  }
}

// The chart's figures as CSV, built here: what is shown, nothing the server did not send.
function chartCsv(starts, ys, previous) {
  const lines = ["bucket_start,count,previous_count"];
  starts.forEach((start, i) => lines.push(start + "," + ys[i] + "," + (previous ? previous[i] ?? "" : "")));
  return lines.join("\r\n") + "\r\n";
}

function offerCsv(csv, interval) {
  if (csvUrl) URL.revokeObjectURL(csvUrl);
  csvUrl = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  const link = $("csv");
  link.href = csvUrl;
  link.download = "tlytics-" + interval + "-" + new Date().toISOString().slice(0, 16).replace(":", "") + ".csv";
  link.hidden = false;
}

function drawChart(stats, interval) {
  const xs = stats.buckets.map((b) => Date.parse(b.start) / 1000);
  const ys = stats.buckets.map((b) => b.count);
  // The previous period drawn under this one, bucket for bucket.
  const previous = stats.previous ? xs.map((_, i) => stats.previous.buckets[i]?.count ?? null) : null;
  const series = [{}, { label: "this period", stroke: "#3867d6", fill: "rgba(56,103,214,.12)", width: 2 }];
  const data = [xs, ys];
  if (previous) {
    series.push({ label: "previous period", stroke: "rgba(56,103,214,.35)", dash: [5, 5], width: 1, points: { show: false } });
    data.push(previous);
  }
  const element = $("chart");
  const width = Math.max(300, element.clientWidth || 800);
  if (chart) chart.destroy();
  chart = new uPlot({ width, height: 260, series, axes: [{}, {}] }, data, element);
  document.body.dataset.chartPoints = String(xs.length);
  document.body.dataset.chartEvents = String(ys.reduce((a, b) => a + b, 0));
  document.body.dataset.chartPrevious = previous ? String(previous.reduce((a, b) => a + (b || 0), 0)) : "";
  offerCsv(chartCsv(stats.buckets.map((b) => b.start), ys, previous), interval);
}

async function loadChart(range) {
  const params = withFilters(new URLSearchParams({ ...range, tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", compare: "previous" }));
  const unique = $("unique-property").value.trim();
  if (unique) params.set("unique", unique);
  const stats = await api("/stats?" + params);
  showTotals(stats, Boolean(unique));
  drawChart(stats, range.interval);
}

function forgetFigures() {
  for (const id of ["total", "unique-total", "change"]) $(id).textContent = "–";
  $("change").className = "figure";
  $("previous-total").textContent = "";
  $("csv").hidden = true;
  if (chart) chart.destroy();
  chart = null;
  for (const name of ["total", "chartPoints", "chartEvents", "chartPrevious"]) delete document.body.dataset[name];
}

async function loadBreakdown() {
  const property = $("breakdown-property").value.trim();
  if (!property) return;
  const [since, until] = alignedRange(30 * 86400);
  const params = withFilters(new URLSearchParams({ interval: "month", breakdown: property, limit: "10", since: since.toISOString(), until: until.toISOString() }));
  const stats = await api("/stats?" + params);
  fillTable("breakdown", (stats.breakdown || []).map((b) => [b.other ? "(other)" : JSON.stringify(b.value), b.count.toLocaleString()]));
}

async function loadKeys() {
  const keys = await api("/keys");
  fillTable("keys", keys.keys.slice(0, 10).map((k) => [k.key, k.count.toLocaleString(), k.last_seen]));
}

async function loadLatest() {
  if (!canSeeRawEvents()) return;
  const view = await api("/view?" + withFilters(new URLSearchParams({ page_size: "20" })));
  fillTable("latest", view.events.map((e) => [e.timestamp, e.key, JSON.stringify(e.data)]));
}

async function loadFunnel(range) {
  const body = document.querySelector("#funnel tbody");
  if (appliedFunnel === null) {
    body.replaceChildren();
    return;
  }
  const { steps, by, within } = appliedFunnel;
  const params = withFilters(new URLSearchParams({ steps, within, since: range.since, until: range.until }));
  if (by) params.set("by", by);
  let funnel;
  try {
    funnel = await api("/funnel?" + params);
    $("funnel-error").textContent = "";
  } catch (error) {
    // A server from before funnels: no panel rather than a broken one.
    if (error.status === 404) $("funnel-panel").hidden = true;
    $("funnel-error").textContent = error.message;
    body.replaceChildren();
    return;
  }
  body.replaceChildren();
  const first = funnel.steps.length ? funnel.steps[0].count : 0;
  for (const step of funnel.steps) {
    const row = body.insertRow();
    cell(row, step.key);
    cell(row, step.count.toLocaleString());
    cell(row, step.conversion === undefined ? "" : (step.conversion * 100).toFixed(1) + " %");
    const bar = document.createElement("progress");
    bar.max = Math.max(first, 1);
    bar.value = step.count;
    cell(row, "").append(bar);
  }
}

// --- refresh -------------------------------------------------------------------------------

function emptyAllPanels() {
  forgetFigures();
  for (const table of ["keys", "breakdown", "latest", "funnel"]) fillTable(table, []);
}

async function refresh() {
  // Answers to an older refresh (filters changed meanwhile) are not shown over newer ones.
  const number = ++refreshNumber;
  refreshing = true;
  try {
    await refreshPanels(number);
  } finally {
    if (number === refreshNumber) refreshing = false;
  }
}

async function refreshPanels(number) {
  const status = $("status");
  if (!accessLearned) {
    try {
      await learnScope();
    } catch (error) {
      if (number === refreshNumber) status.textContent = "error: cannot learn what this key may see: " + error.message;
      return;
    }
  }
  if (!access.allowed.has("stats")) {
    // A key the server does not know, or none where one is needed: ask for one, not 401s.
    emptyAllPanels();
    status.textContent = keyInput.value ? "this key may not read figures: give another" : "this server needs a key: type it above";
    document.body.dataset.loaded = "true";
    return;
  }
  const range = chartRange();
  // Each panel with what empties it when its request fails: figures for other filters than
  // those shown would mislead.
  const panels = [
    [() => loadChart(range), forgetFigures],
    [loadKeys, () => fillTable("keys", [])],
    [loadBreakdown, () => fillTable("breakdown", [])],
    [loadLatest, () => fillTable("latest", [])],
    [() => loadFunnel(range), () => fillTable("funnel", [])],
  ];
  const results = await Promise.allSettled(panels.map(([load]) => load()));
  if (number !== refreshNumber) return;
  results.forEach((result, index) => { if (result.status === "rejected") panels[index][1](); });
  const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  const whereError = failures.find((e) => e.field === "where");
  $("filter-error").textContent = whereError ? whereError.message : "";
  if (failures.length) {
    status.textContent = "error: " + failures[0].message;
  } else {
    status.textContent = "updated " + new Date().toLocaleTimeString();
  }
  document.body.dataset.refreshes = String(number);
  document.body.dataset.loaded = "true";
}

// --- share ---------------------------------------------------------------------------------

function shareLink(key) {
  return location.origin + "/#key=" + encodeURIComponent(key);
}

function showShareLink(link) {
  $("share-link").value = link;
  $("share-result").hidden = false;
  document.body.dataset.shareLink = link;
}

// A share link carries a stats key only: the current key when it is one, else one the user
// types, checked with /whoami first. A read or admin key never goes into a link.
function openShare() {
  const panel = $("share-panel");
  panel.hidden = !panel.hidden;
  $("share-result").hidden = true;
  const message = $("share-message");
  if (access.scope === "stats" && keyInput.value) {
    message.textContent = "This link shows aggregates only (the key in it has the stats scope).";
    $("share-form").hidden = true;
    showShareLink(shareLink(keyInput.value));
    return;
  }
  $("share-form").hidden = false;
  if (access.known && !keyInput.value && canSeeRawEvents()) {
    // Raw events without a key: this server has no reading keys, so none to share either.
    message.textContent = "This server needs no key: anyone who reaches it sees everything, raw events included, so there is no aggregates-only link to make.";
    $("share-form").hidden = true;
    return;
  }
  message.textContent = canSeeRawEvents()
    ? "What you see includes raw events, so your access is not shared: give a key with the stats scope (the link then shows aggregates only)."
    : "Give a key with the stats scope: whoever opens the link sees aggregates only.";
}

async function makeShareLink(event) {
  event.preventDefault();
  const key = $("share-key").value.trim();
  const message = $("share-message");
  $("share-result").hidden = true;
  delete document.body.dataset.shareLink;
  message.textContent = "Checking the key…";
  if (!key) {
    message.textContent = "Give a key with the stats scope.";
    return;
  }
  let keyAccess;
  try {
    keyAccess = await accessOf(key);
  } catch (error) {
    message.textContent = "Could not check the key: " + error.message;
    return;
  }
  if (!keyAccess.known) {
    message.textContent = "This server cannot tell a key's scope (it has no /whoami), so no link is made.";
  } else if (keyAccess.scope === "stats") {
    message.textContent = "This link shows aggregates only.";
    showShareLink(shareLink(key));
  } else if (keyAccess.scope === null) {
    message.textContent = "The server does not know this key: no link is made.";
  } else {
    message.textContent = "This key has the " + keyAccess.scope + " scope, not stats: it would show more than aggregates, so no link is made.";
  }
}

// --- wiring --------------------------------------------------------------------------------

function changeKey() {
  sessionStorage.setItem(KEY_STORAGE, keyInput.value);
  accessLearned = false;
  refresh();
}

loadKey();
keyInput.addEventListener("change", changeKey);
// A share link opened in a tab already on the dashboard only changes the fragment.
window.addEventListener("hashchange", () => { if (takeKeyFromFragment()) changeKey(); });
$("add-filter").addEventListener("click", () => addFilterRow());
$("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
$("funnel-form").addEventListener("submit", (event) => { event.preventDefault(); applyFunnel(); });
$("interval").addEventListener("change", refresh);
$("unique-property").addEventListener("change", refresh);
$("breakdown-property").addEventListener("change", refresh);
$("share").addEventListener("click", openShare);
$("share-form").addEventListener("submit", makeShareLink);
$("share-copy").addEventListener("click", () => {
  $("share-link").select();
  navigator.clipboard?.writeText($("share-link").value).catch(() => {});
});
addFilterRow();
refresh();
setInterval(() => { if (!refreshing) refresh(); }, REFRESH_PERIOD_MS);
