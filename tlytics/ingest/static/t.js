/* Tlytics page script: page views (single-page apps included) and custom events, sent with
 * navigator.sendBeacon to this server's Segment-compatible /v1/batch. No cookies, no storage:
 * a visitor is an anonymous id that lives as long as the page. Honours Do Not Track.
 *
 *   <script defer src="https://tlytics.example/t.js" data-key="WRITE_KEY"></script>
 *   tlytics("signup", {plan: "pro"});   // a custom event (a track), after or before load
 *
 * data-key: a write key (public once in a page: never another scope); data-host: the server
 * (default: where this script came from); data-auto="false": no automatic page views;
 * data-respect-dnt="false": send even when the browser asks not to be tracked.
 * The server needs --cors-origin naming the page's origin. */
(function () {
  "use strict";
  var script = document.currentScript;
  var queued = (window.tlytics && window.tlytics.q) || [];
  function attribute(name, fallback) {
    var value = script && script.getAttribute("data-" + name);
    return value === null || value === undefined || value === "" ? fallback : value;
  }
  var dnt = navigator.doNotTrack === "1" || window.doNotTrack === "1" || navigator.msDoNotTrack === "1";
  var off = !script || !navigator.sendBeacon || (dnt && attribute("respect-dnt", "true") !== "false");
  window.tlytics = function () {};
  if (off) return;

  var host = attribute("host", new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var endpoint = host + "/v1/batch";
  var key = attribute("key", undefined);
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }
  var anonymousId = uuid();

  function pageFields() {
    return {
      path: location.pathname,
      url: location.href,
      search: location.search,
      title: document.title,
      referrer: document.referrer
    };
  }

  function send(message) {
    var now = new Date().toISOString();
    message.messageId = uuid();
    message.timestamp = now;
    message.anonymousId = anonymousId;
    message.context = { page: pageFields(), library: { name: "tlytics-t.js", version: "1" } };
    var body = { batch: [message], sentAt: now };
    if (key) body.writeKey = key;
    // text/plain: a "simple" request, no preflight; the server reads it as JSON (CORS on).
    navigator.sendBeacon(endpoint, new Blob([JSON.stringify(body)], { type: "text/plain" }));
  }

  var lastPath = null;
  function page() {
    var path = location.pathname + location.search;
    if (path === lastPath) return; // a pushState that did not move (hash changes, same URL)
    lastPath = path;
    send({ type: "page", properties: pageFields() });
  }

  window.tlytics = function (event, properties) {
    if (typeof event !== "string" || !event) return;
    send({ type: "track", event: event, properties: properties || {} });
  };
  window.tlytics.page = page;

  if (attribute("auto", "true") !== "false") {
    var pushState = history.pushState;
    history.pushState = function () {
      var result = pushState.apply(this, arguments);
      page();
      return result;
    };
    window.addEventListener("popstate", page);
    page();
  }
  for (var i = 0; i < queued.length; i++) window.tlytics.apply(null, queued[i]);
})();
