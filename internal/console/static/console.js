// The edgesync storage console: views over the HTTP API, live from the
// sync-status event stream and periodic reads. No framework, no build step;
// every value from the API is written as text, never as HTML.
"use strict";

(() => {
  // The Prometheus series the overview shows. They are the ones the Grafana
  // dashboard queries (a test in internal/console holds the two together):
  // one source for each number, whichever screen shows it.
  const SERIES = {
    memories: "edgesync_memories", // {memory_type}
    edges: "edgesync_edges", // {backend, artifact, present}
    bytes: "edgesync_edges_bytes", // {backend, artifact, present}
    syncs: "edgesync_sync_edges", // {backend, state}
    leader: "edgesync_leader",
    slotLag: "edgesync_cdc_slot_lag_bytes",
    confirmedLSN: "edgesync_cdc_confirmed_lsn",
    events: "edgesync_cdc_events_total", // {table, op}
    behindSum: "edgesync_cdc_decode_lag_seconds_sum",
    behindCount: "edgesync_cdc_decode_lag_seconds_count",
    uploadBytes: "edgesync_icp_upload_bytes_total",
  };
  const MEMORY_TYPES = ["image", "video", "note", "document", "audio"];
  const BACKENDS = ["neon-db", "vercel-blob", "icp-canister"];
  const SYNC_STATES = ["idle", "migrating", "failed"];
  const GALLERY_STATUSES = ["empty", "web2_only", "partial", "stored_forever"];
  const TOKEN_KEY = "edgesync.adminToken";
  const REFRESH_MS = 5000; // periodic reads, besides the event stream
  const DEBOUNCE_MS = 250; // a burst of events causes one read

  const main = document.getElementById("main");

  // ---- DOM helpers --------------------------------------------------------

  // h builds an element; attributes named on* become listeners; children are
  // nodes or text (null and false are skipped).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.setAttribute("class", v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
  }

  function replace(el, ...kids) {
    el.replaceChildren();
    append(el, kids);
  }

  function table(caption, headers, rows, attrs) {
    return h("div", { class: "scroll" },
      h("table", attrs,
        caption ? h("caption", null, caption) : null,
        h("thead", null, h("tr", null, headers.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, rows)));
  }

  // ---- formatting ---------------------------------------------------------

  const nf = new Intl.NumberFormat("en");
  function num(v) {
    return v === null || v === undefined || Number.isNaN(v) ? "—" : nf.format(v);
  }
  function bytes(v) {
    if (v === null || v === undefined) return "—";
    const units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) {
      v /= 1000;
      i++;
    }
    return (i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  }
  function seconds(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function lsn(v) {
    if (v === null || v === undefined) return "—";
    const hi = Math.floor(v / 4294967296);
    const lo = v - hi * 4294967296;
    return hi.toString(16).toUpperCase() + "/" + lo.toString(16).toUpperCase();
  }
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return h("time", { datetime: iso, title: iso }, d.toLocaleString());
  }
  function shortID(id) {
    return h("code", { title: id }, id.length > 13 ? "…" + id.slice(-12) : id);
  }
  function badge(kind, text) {
    return h("span", { class: "badge " + kind, "data-status": text }, text.replace(/_/g, " "));
  }
  function yes(v) {
    return h("span", { class: v ? "yes" : "no", "aria-label": v ? "yes" : "no" }, v ? "✓" : "–");
  }

  // bars is a bar chart: one row per item, the bar an SVG rect scaled to the
  // largest value, the number beside it.
  function bars(label, items, fmt = num) {
    const max = Math.max(1, ...items.map((i) => i.value || 0));
    return h("div", { class: "scroll" },
      h("table", { class: "bars", "aria-label": label },
        h("tbody", null, items.map((i) => h("tr", null,
          h("th", { scope: "row" }, i.label),
          h("td", { class: "bar", "aria-hidden": "true" },
            svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", focusable: "false" },
              svg("rect", { width: String(((i.value || 0) / max) * 100), height: "10", class: i.cls || "" }))),
          h("td", { class: "n" }, fmt(i.value)))))));
  }

  // ---- HTTP ---------------------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api fetches a JSON route; ok lists extra statuses whose body is an answer
  // (GET /api/health/backends says 503 with the report when one is down).
  async function api(path, { method = "GET", token = null, ok = [] } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, { method, headers, cache: "no-store" });
    const type = res.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await res.json() : await res.text();
    if (!res.ok && !ok.includes(res.status)) {
      const e = body && body.error ? body.error : { code: String(res.status), message: res.status + " " + res.statusText };
      throw new APIError(res.status, e.code, e.message);
    }
    return body;
  }

  async function metrics() {
    const res = await fetch("/metrics", { headers: { Accept: "text/plain" }, cache: "no-store" });
    if (!res.ok) throw new APIError(res.status, "metrics", "/metrics answered " + res.status);
    return new window.EdgesyncMetrics.Samples(window.EdgesyncMetrics.parse(await res.text()), performance.now());
  }

  // ---- the admin token: asked once, kept for the tab ----------------------

  const dialog = document.getElementById("token-dialog");
  const tokenInput = document.getElementById("token-input");
  const forget = document.getElementById("forget-token");

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }
  function storeToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token lives until the page closes
    }
    memoryToken = t;
    forget.hidden = !t;
  }
  let memoryToken = storedToken();
  forget.hidden = !memoryToken;
  forget.addEventListener("click", () => {
    storeToken(null);
    toast("Token forgotten.");
  });

  function askToken(why) {
    return new Promise((resolve) => {
      document.getElementById("token-why").textContent = why;
      tokenInput.value = "";
      const done = (v) => {
        dialog.removeEventListener("close", onClose);
        resolve(v);
      };
      const onClose = () => done(dialog.returnValue === "ok" && tokenInput.value.trim() ? tokenInput.value.trim() : null);
      dialog.addEventListener("close", onClose);
      dialog.returnValue = "";
      dialog.showModal();
      tokenInput.focus();
    });
  }
  document.getElementById("token-cancel").addEventListener("click", () => dialog.close("cancel"));

  // withToken runs an action with the admin token, asking for it when none is
  // kept or when the server refused the kept one.
  async function withToken(why, action) {
    let token = memoryToken;
    for (let i = 0; i < 3; i++) {
      if (!token) {
        token = await askToken(why);
        if (!token) return null;
        storeToken(token);
      }
      try {
        return await action(token);
      } catch (e) {
        if (e.status !== 401) throw e;
        storeToken(null);
        token = null;
        why = "The server refused that token (" + e.message + "). " + why;
      }
    }
    return null;
  }

  // ---- messages -----------------------------------------------------------

  const toastEl = document.getElementById("toast");
  let toastTimer = 0;
  function toast(msg, isError = false) {
    toastEl.textContent = msg;
    toastEl.className = isError ? "error" : "";
    toastEl.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (toastEl.hidden = true), 8000);
  }

  function errorLine(e) {
    return h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e));
  }

  // ---- the event stream ---------------------------------------------------

  const live = document.getElementById("live");
  const progress = new Map(); // memory_id → {memory_type, bytes_done, bytes_total, at}
  const activity = []; // the latest sync events, newest first
  let source = null;
  let streamQuery = ""; // the current view's filter of the stream (gallery= or memory=)

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
    document.body.dataset.live = state;
  }

  // follow makes the stream carry what the view shows: one gallery's or one
  // memory's events (the stream's own filters), else every event.
  function follow(query) {
    if (query === streamQuery && source) return;
    streamQuery = query;
    connect();
  }

  function connect() {
    if (!window.EventSource) {
      setLive("off", "no live updates in this browser; reading every " + REFRESH_MS / 1000 + " s");
      return;
    }
    if (source) source.close();
    const url = "/api/storage/sync-status/stream" + (streamQuery ? "?" + streamQuery : "");
    const es = new EventSource(url);
    source = es;
    live.dataset.stream = url;
    setLive("connecting", "connecting…");
    es.addEventListener("open", () => setLive("open", "live"));
    es.addEventListener("error", () => {
      if (es !== source) return;
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. 503 at this instance's client cap): try again later.
        setLive("closed", "live updates refused; retrying");
        source = null;
        setTimeout(() => source || connect(), REFRESH_MS);
      } else {
        setLive("reconnecting", "reconnecting…");
      }
    });
    es.addEventListener("sync", (ev) => {
      noteSync(ev.data);
      scheduleRefresh();
    });
    es.addEventListener("progress", (ev) => {
      try {
        const p = JSON.parse(ev.data);
        const seen = progress.has(p.memory_id);
        progress.set(p.memory_id, p);
        showProgress(p);
        if (!seen) scheduleRefresh(); // a list of uploads may need a new line
      } catch {
        // a malformed event changes nothing on the page
      }
    });
    es.addEventListener("reset", () => scheduleRefresh());
  }

  function noteSync(data) {
    try {
      const e = JSON.parse(data);
      const img = e.after || e.before || {};
      activity.unshift({
        at: e.emitted_at || new Date().toISOString(),
        op: e.op,
        memory_id: e.memory_id,
        memory_type: e.memory_type,
        backend: e.backend || img.backend,
        artifact: e.artifact || img.artifact,
        state: img.sync_state,
        present: img.present,
      });
      activity.length = Math.min(activity.length, 20);
    } catch {
      // not an edge envelope: nothing to list
    }
  }

  // showProgress updates the progress bars of one memory where they are shown.
  function showProgress(p) {
    for (const el of document.querySelectorAll("[data-progress-memory]")) {
      if (el.dataset.progressMemory === p.memory_id) replace(el, progressBar(p));
    }
  }

  function progressBar(p) {
    if (!p) return "—";
    const done = p.bytes_done || 0;
    const total = p.bytes_total || 0;
    const label = done >= total && total > 0 ? bytes(total) + ", done" : bytes(done) + " of " + bytes(total);
    return h("span", { class: "progress" },
      h("progress", { max: String(total || 1), value: String(done), "aria-label": label }), " ", label);
  }

  // ---- views ----------------------------------------------------------------

  let current = null; // the view on screen: {name, refresh(), timer}
  let refreshTimer = 0;
  let busy = false;
  let again = false;

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshNow, DEBOUNCE_MS);
  }

  async function refreshNow() {
    if (!current) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    const view = current;
    try {
      await view.refresh();
      if (view === current) main.dataset.loaded = "true";
    } finally {
      busy = false;
      if (again) {
        again = false;
        scheduleRefresh();
      }
    }
  }

  setInterval(() => {
    if (!document.hidden) refreshNow();
  }, REFRESH_MS);

  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    const name = parts[0] || "overview";
    let view;
    if (name === "galleries" && parts[1]) view = galleryView(parts[1]);
    else if (name === "galleries") view = galleriesView(params);
    else if (name === "memories" && parts[2]) view = memoryView(parts[1], parts[2]);
    else if (name === "sync") view = syncView(params);
    else if (name === "reconcile") view = reconcileView();
    else view = overviewView();
    for (const a of document.querySelectorAll("nav a")) {
      if (a.dataset.view === view.nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    current = view;
    follow(view.stream || "");
    main.dataset.view = view.name;
    main.dataset.loaded = "false";
    replace(main, view.el);
    document.title = view.title + " · edgesync";
    refreshNow();
  }

  function section(title, ...kids) {
    return h("section", null, h("h2", null, title), kids);
  }

  // ---- overview ---------------------------------------------------------------

  function overviewView() {
    const body = h("div", { class: "grid" });
    const health = h("div");
    const note = h("p", { class: "hint" },
      "Figures from this instance's /metrics, the series the Grafana dashboard shows; edge counts are recounted every 30 s. ",
      "Events per second and time behind (commit to pipeline) are computed from successive readings.");
    let prev = null;
    const el = h("div", null, h("h1", null, "Overview"), note, body, section("Backend health", health));

    async function refresh() {
      let m;
      try {
        m = await metrics();
      } catch (e) {
        replace(body, errorLine(e));
        return;
      }
      const rate = (name) => {
        if (!prev) return null;
        const dt = (m.at - prev.at) / 1000;
        const d = (m.sum(name) || 0) - (prev.sum(name) || 0);
        return dt > 0 && d >= 0 ? d / dt : null;
      };
      let behind = null;
      if (prev) {
        const n = (m.sum(SERIES.behindCount) || 0) - (prev.sum(SERIES.behindCount) || 0);
        const s = (m.sum(SERIES.behindSum) || 0) - (prev.sum(SERIES.behindSum) || 0);
        behind = n > 0 ? s / n : 0;
      }
      const evRate = rate(SERIES.events);
      const upRate = rate(SERIES.uploadBytes);
      prev = m;

      const types = m.sumBy(SERIES.memories, "memory_type");
      const edgeBy = m.sumBy(SERIES.edges, "backend", { present: "true" });
      const byteBy = m.sumBy(SERIES.bytes, "backend", { present: "true" });
      const leader = m.sum(SERIES.leader);
      const role = leader === null ? "unknown" : leader >= 1 ? "leader" : "standby";

      const syncRows = BACKENDS.map((b) => h("tr", null, h("th", { scope: "row" }, b),
        SYNC_STATES.map((s) => h("td", { class: "n", "data-backend": b, "data-state": s }, num(m.sum(SERIES.syncs, { backend: b, state: s }))))));
      const edgeRows = BACKENDS.map((b) => h("tr", null, h("th", { scope: "row" }, b),
        ["metadata", "asset"].map((a) => h("td", { class: "n" }, num(m.sum(SERIES.edges, { backend: b, artifact: a, present: "true" }) || 0))),
        h("td", { class: "n" }, num(m.sum(SERIES.edges, { backend: b, present: "false" }) || 0))));

      replace(body,
        section("Memories by type",
          bars("Memories by type", MEMORY_TYPES.map((t) => ({ label: t, value: types.get(t) || 0 })))),
        section("Edges per backend",
          bars("Present edges per backend", BACKENDS.map((b) => ({ label: b, value: edgeBy.get(b) || 0, cls: b }))),
          table("Present edges by artifact, and edges not present", ["backend", "metadata", "asset", "not present"], edgeRows)),
        section("Bytes per backend",
          bars("Bytes of present edges per backend", BACKENDS.map((b) => ({ label: b, value: byteBy.get(b) || 0, cls: b })), bytes)),
        section("Syncs by state",
          table(null, ["backend", ...SYNC_STATES], syncRows, { id: "sync-states" })),
        section("Pipeline",
          h("dl", { class: "facts", id: "pipeline" },
            h("dt", null, "This instance"), h("dd", { "data-role": role }, role === "standby" ? "standby (the leader's pod reads the slot; its figures are there)" : role),
            h("dt", null, "Slot lag"), h("dd", null, bytes(m.sum(SERIES.slotLag))),
            h("dt", { title: "commit to pipeline, average since the last reading" }, "Time behind"), h("dd", null, prev && behind !== null ? seconds(behind) : "—"),
            h("dt", null, "Last confirmed LSN"), h("dd", null, lsn(m.sum(SERIES.confirmedLSN))),
            h("dt", null, "Events per second"), h("dd", null, evRate === null ? "measuring…" : evRate.toFixed(1)),
            h("dt", null, "ICP upload"), h("dd", null, upRate === null ? "measuring…" : bytes(upRate) + "/s"))));

      try {
        const hb = await api("/api/health/backends", { ok: [503] });
        const rows = (hb.backends || []).map((b) => h("tr", { "data-backend": b.name },
          h("th", { scope: "row" }, b.name), h("td", null, b.ok ? badge("ok", "up") : badge("bad", "down")),
          h("td", { class: "n" }, b.latency_ms !== undefined ? b.latency_ms.toFixed(1) + " ms" : "—"),
          h("td", null, b.error || "")));
        replace(health, table(hb.checked_at ? h("span", null, "checked ", when(hb.checked_at)) : "not checked yet",
          ["backend", "state", "latency", "error"], rows));
      } catch (e) {
        replace(health, errorLine(e));
      }
    }
    return { name: "overview", nav: "overview", title: "Overview", el, refresh };
  }

  // ---- galleries ----------------------------------------------------------------

  const galleryCache = new Map(); // id → the gallery's last list item

  function galleriesView(params) {
    const state = { q: params.get("q") || "", status: params.get("status") || "", pages: 1 };
    const results = h("div", { id: "gallery-results" });
    const q = h("input", { type: "search", id: "gallery-q", name: "q", value: state.q, autocomplete: "off", placeholder: "title contains…" });
    const status = h("select", { id: "gallery-status", name: "status" },
      h("option", { value: "" }, "any status"),
      GALLERY_STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s.replace(/_/g, " "))));
    let typing = 0;
    const apply = () => {
      state.q = q.value.trim();
      state.status = status.value;
      state.pages = 1;
      const p = new URLSearchParams();
      if (state.q) p.set("q", state.q);
      if (state.status) p.set("status", state.status);
      history.replaceState(null, "", "#/galleries" + (p.toString() ? "?" + p : ""));
      refreshNow();
    };
    q.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(apply, 300);
    });
    status.addEventListener("change", apply);
    const form = h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
      h("label", { for: "gallery-q" }, "Search"), q,
      h("label", { for: "gallery-status" }, "Status"), status,
      h("button", { type: "submit" }, "Search"));
    const el = h("div", null, h("h1", null, "Galleries"), form, results);
    let next = null;

    async function refresh() {
      const p = new URLSearchParams({ limit: String(Math.min(50 * state.pages, 200)) });
      if (state.q) p.set("q", state.q);
      if (state.status) p.set("status", state.status);
      let body;
      try {
        body = await api("/api/galleries?" + p);
      } catch (e) {
        replace(results, errorLine(e));
        return;
      }
      const list = body.galleries || [];
      next = body.next_cursor;
      for (const g of list) galleryCache.set(g.gallery_id, g);
      const rows = list.map((g) => h("tr", { "data-gallery-id": g.gallery_id, "data-status": g.status },
        h("th", { scope: "row" }, h("a", { href: "#/galleries/" + encodeURIComponent(g.gallery_id) }, g.title || "(untitled)")),
        h("td", { class: "status" }, badge(g.status, g.status)),
        h("td", { class: "n" }, num(g.total_memories)),
        h("td", { class: "n" }, num(g.icp_complete_memories)),
        h("td", { class: "n migrating" }, num(g.migrating)),
        h("td", { class: "n failed" }, num(g.failed)),
        h("td", null, when(g.created_at)),
        h("td", { class: "hint" }, g.source + (g.as_of ? " · " : ""), g.as_of ? when(g.as_of) : null)));
      const more = !next ? null : state.pages < 4 ? h("p", null, h("button", { type: "button", onclick: loadMore }, "Load more")) :
        h("p", { class: "hint" }, "More galleries match: narrow the search or the status to see them.");
      replace(results,
        list.length === 0 ? h("p", { class: "empty" }, "No galleries match.") :
          table(null, ["title", "status", "memories", "on ICP", "migrating", "failed", "created", "figures from"], rows, { id: "galleries" }),
        more);
    }

    // Up to 200 rows are re-read on each refresh, so what is shown stays live;
    // beyond that the search has to narrow the list.
    function loadMore() {
      state.pages++;
      refreshNow();
    }
    return { name: "galleries", nav: "galleries", title: "Galleries", el, refresh };
  }

  // storeForever asks for the ICP mirror of a gallery or a memory.
  function storeForever(path, what) {
    return withToken("Store Forever of " + what + " needs the admin token.", (token) => api(path, { method: "POST", token }))
      .then((r) => {
        if (!r) return;
        const n = (r.queued || []).length;
        toast(n ? "Queued " + n + " memor" + (n === 1 ? "y" : "ies") + " for ICP." : "Nothing new to queue: already on ICP or on its way.");
        scheduleRefresh();
      })
      .catch((e) => toast(e.message, true));
  }

  function memoryActions(m, state) {
    const path = "/api/memories/" + encodeURIComponent(m.memory_type) + "/" + encodeURIComponent(m.memory_id) + "/store-forever";
    const label = state === "failed" ? "Retry" : "Store Forever";
    return h("button", { type: "button", class: state === "failed" ? "retry" : "", onclick: () => storeForever(path, "this " + m.memory_type) }, label);
  }

  function edgesTable(edges) {
    return table(null, ["artifact", "backend", "present", "sync", "error", "size", "hash", "location", "updated"],
      edges.map((e) => h("tr", { "data-edge-id": e.id },
        h("td", null, e.artifact), h("td", null, e.backend), h("td", null, yes(e.present)),
        h("td", null, badge(e.sync_state, e.sync_state)), h("td", { class: "err" }, e.sync_error || ""),
        h("td", { class: "n" }, e.size_bytes === null || e.size_bytes === undefined ? "—" : bytes(e.size_bytes)),
        h("td", null, e.content_hash ? shortID(e.content_hash) : "—"),
        h("td", { class: "loc" }, e.location || ""), h("td", null, when(e.updated_at)))));
  }

  function galleryView(id) {
    const head = h("div");
    const items = h("div", { id: "gallery-memories" });
    const open = new Set(); // memories whose edges are shown
    const el = h("div", null, h("p", null, h("a", { href: "#/galleries" }, "← Galleries")), head, items);
    let shown = 50;

    async function refresh() {
      let body;
      try {
        body = await api("/api/galleries/" + encodeURIComponent(id) + "/presence?limit=" + shown);
      } catch (e) {
        replace(head, h("h1", null, "Gallery"), errorLine(e));
        replace(items);
        return;
      }
      const g = body.gallery;
      const cached = galleryCache.get(id) || {};
      const mems = body.memories || [];
      const count = (s) => mems.filter((m) => m.sync_state === s).length;
      replace(head,
        h("h1", null, cached.title || "Gallery ", cached.title ? null : shortID(id)),
        h("dl", { class: "facts", id: "gallery-facts", "data-status": g.status },
          h("dt", null, "Status"), h("dd", null, badge(g.status, g.status)),
          h("dt", null, "Memories"), h("dd", null, num(g.total_memories)),
          h("dt", null, "Complete on ICP"), h("dd", null, num(g.icp_complete_memories)),
          h("dt", null, "Migrating / failed (listed memories)"), h("dd", null, num(count("migrating")) + " / " + num(count("failed"))),
          h("dt", null, "Figures from"), h("dd", null, g.source, g.as_of ? h("span", null, " as of ", when(g.as_of)) : null)),
        h("p", null, h("button", { type: "button", id: "gallery-store-forever", onclick: () => storeForever("/api/galleries/" + encodeURIComponent(id) + "/store-forever", "this gallery") }, "Store Forever")));
      const rows = [];
      for (const m of mems) {
        const key = m.memory_type + "/" + m.memory_id;
        const toggle = h("button", { type: "button", "aria-expanded": open.has(key) ? "true" : "false", onclick: () => {
          if (open.has(key)) open.delete(key);
          else open.add(key);
          refreshNow();
        } }, open.has(key) ? "Hide edges" : "Edges");
        rows.push(h("tr", { "data-memory-id": m.memory_id, "data-sync": m.sync_state },
          h("td", null, m.memory_type), h("th", { scope: "row" }, h("a", { href: "#/memories/" + m.memory_type + "/" + m.memory_id }, shortID(m.memory_id))),
          h("td", null, yes(m.meta_neon)), h("td", null, yes(m.asset_blob)), h("td", null, yes(m.meta_icp)), h("td", null, yes(m.asset_icp)),
          h("td", null, yes(m.icp_complete)), h("td", null, badge(m.sync_state, m.sync_state)),
          h("td", { "data-progress-memory": m.memory_id }, m.sync_state === "migrating" ? progressBar(progress.get(m.memory_id)) : ""),
          h("td", { class: "actions" }, toggle, " ", memoryActions(m, m.sync_state))));
        if (open.has(key)) {
          const cell = h("td", { colspan: "10" }, "loading…");
          rows.push(h("tr", { class: "sub" }, cell));
          api("/api/memories/" + encodeURIComponent(m.memory_type) + "/" + encodeURIComponent(m.memory_id) + "/presence")
            .then((p) => replace(cell, edgesTable(p.edges || [])))
            .catch((e) => replace(cell, errorLine(e)));
        }
      }
      replace(items, h("h2", null, "Memories"),
        mems.length === 0 ? h("p", { class: "empty" }, "This gallery has no memories.") :
          table(null, ["type", "memory", "metadata in Postgres", "asset in Blob", "metadata on ICP", "asset on ICP", "complete on ICP", "sync", "upload", ""], rows),
        body.next_cursor ? h("p", null, h("button", { type: "button", onclick: () => { shown = Math.min(shown * 2, 500); refreshNow(); } }, "Show more")) : null);
    }
    return { name: "gallery", nav: "galleries", title: "Gallery", el, refresh, stream: "gallery=" + encodeURIComponent(id) };
  }

  function memoryView(type, id) {
    const body = h("div");
    const el = h("div", null, h("h1", null, type + " ", shortID(id)), body);
    async function refresh() {
      try {
        const p = await api("/api/memories/" + encodeURIComponent(type) + "/" + encodeURIComponent(id) + "/presence");
        const state = (p.edges || []).some((e) => e.sync_state === "failed") ? "failed" : "";
        replace(body,
          h("dl", { class: "facts" },
            h("dt", null, "Memory row"), h("dd", null, p.exists ? "exists" : "deleted (edges remain)"),
            h("dt", null, "Complete on ICP"), h("dd", null, yes(p.presence.icp_complete)),
            h("dt", null, "Upload"), h("dd", { "data-progress-memory": id }, progress.has(id) ? progressBar(progress.get(id)) : "—")),
          h("p", null, memoryActions({ memory_type: type, memory_id: id }, state)),
          h("h2", null, "Edges"), edgesTable(p.edges || []));
      } catch (e) {
        replace(body, errorLine(e));
      }
    }
    return { name: "memory", nav: "", title: "Memory", el, refresh, stream: "memory=" + encodeURIComponent(id) };
  }

  // ---- sync queue -------------------------------------------------------------------

  function syncView(params) {
    const state = { state: params.get("state") || "", backend: params.get("backend") || "" };
    const counts = h("p", { id: "sync-counts" });
    const results = h("div", { id: "sync-results" });
    const uploads = h("div", { id: "uploads" });
    const feed = h("ol", { id: "activity", class: "activity" });
    const pick = (name, values, label) => {
      const s = h("select", { id: "sync-" + name, name },
        h("option", { value: "" }, label), values.map((v) => h("option", { value: v, selected: v === state[name] }, v)));
      s.addEventListener("change", () => {
        state[name] = s.value;
        const p = new URLSearchParams();
        if (state.state) p.set("state", state.state);
        if (state.backend) p.set("backend", state.backend);
        history.replaceState(null, "", "#/sync" + (p.toString() ? "?" + p : ""));
        refreshNow();
      });
      return [h("label", { for: "sync-" + name }, name === "state" ? "State" : "Backend"), s];
    };
    const el = h("div", null, h("h1", null, "Sync queue"),
      h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
        pick("state", ["migrating", "failed"], "migrating and failed"), pick("backend", BACKENDS, "any backend")),
      counts, results,
      section("ICP uploads", h("p", { class: "hint" },
        "The latest uploads since this page opened, from the ICP mirror's progress events on the live stream (a few a second per upload, and one at the end)."), uploads),
      section("Latest edge changes (live)", feed));

    async function refresh() {
      const p = new URLSearchParams({ limit: "200" });
      if (state.state) p.set("state", state.state);
      if (state.backend) p.set("backend", state.backend);
      let body;
      try {
        body = await api("/api/storage/sync-status?" + p);
      } catch (e) {
        replace(results, errorLine(e));
        return;
      }
      const c = body.counts || {};
      replace(counts, h("strong", { "data-count": "migrating" }, num(c.migrating)), " migrating · ",
        h("strong", { "data-count": "failed" }, num(c.failed)), " failed", body.next_cursor ? " (the first 200 are listed)" : "");
      const rows = (body.items || []).map((it) => h("tr", { "data-edge-id": it.id, "data-memory-id": it.memory_id, "data-state": it.sync_state },
        h("th", { scope: "row" }, it.memory_type, " ", h("a", { href: "#/memories/" + it.memory_type + "/" + it.memory_id }, shortID(it.memory_id))),
        h("td", null, it.artifact), h("td", null, it.backend), h("td", null, badge(it.sync_state, it.sync_state)),
        h("td", { class: "err" }, it.sync_error || ""), h("td", { class: "n" }, seconds(it.in_state_seconds)),
        h("td", { class: "n" }, num(it.attempts || 0)),
        h("td", { "data-progress-memory": it.memory_id }, it.sync_state === "migrating" ? progressBar(progress.get(it.memory_id)) : ""),
        h("td", null, it.sync_state === "failed" ? memoryActions(it, "failed") : "")));
      replace(results, rows.length === 0 ? h("p", { class: "empty" }, "Nothing is migrating or failed.") :
        table(null, ["memory", "artifact", "backend", "state", "sync error", "in state for", "attempts", "upload", ""], rows, { id: "sync-items" }));
      const ups = [...progress.values()].sort((a, b) => (a.at < b.at ? 1 : -1)).slice(0, 20);
      replace(uploads, ups.length === 0 ? h("p", { class: "empty" }, "No upload reported progress since this page opened.") :
        h("ul", null, ups.map((u) => h("li", null, u.memory_type, " ", h("a", { href: "#/memories/" + u.memory_type + "/" + u.memory_id }, shortID(u.memory_id)), " ",
          h("span", { "data-progress-memory": u.memory_id }, progressBar(u))))));
      replace(feed, activity.length === 0 ? h("li", { class: "empty" }, "No edge changed since this page opened.") :
        activity.map((a) => h("li", null, when(a.at), " ", a.memory_type || "", " ", a.memory_id ? shortID(a.memory_id) : "", " ",
          a.artifact || "", " on ", a.backend || "?", ": ", a.op || "", a.state ? " → " + a.state : "")));
    }
    return { name: "sync", nav: "sync", title: "Sync queue", el, refresh };
  }

  // ---- reconcile ------------------------------------------------------------------------

  function reconcileView() {
    const runs = h("div", { id: "runs" });
    const startMsg = h("p", { id: "reconcile-started", role: "status" });
    const start = (dryRun) => withToken((dryRun ? "A dry run" : "A repair run") + " of reconcile needs the admin token.",
      (token) => api("/admin/reconcile?dry_run=" + dryRun, { method: "POST", token }))
      .then((r) => {
        if (!r) return;
        replace(startMsg, "Started ", dryRun ? "dry run " : "repair run ", shortID(r.run_id), ".");
        startMsg.dataset.runId = r.run_id;
        refreshNow();
      })
      .catch((e) => replace(startMsg, errorLine(e.status === 409 ? "A run is already running; wait for it to finish." : e)));
    const el = h("div", null, h("h1", null, "Reconcile"),
      h("p", null, "A run finds orphaned, missing and drifted edges, stuck and failed syncs and ICP drift; a dry run only counts them."),
      h("p", { class: "buttons" },
        h("button", { type: "button", id: "reconcile-dry", onclick: () => start(true) }, "Start a dry run"),
        h("button", { type: "button", id: "reconcile-repair", class: "danger", onclick: () => start(false) }, "Start a run that repairs")),
      startMsg, section("Runs", runs));
    let poll = 0;

    async function refresh() {
      let body;
      try {
        body = await api("/api/reconcile/runs?limit=20");
      } catch (e) {
        replace(runs, errorLine(e));
        return;
      }
      const list = body.runs || [];
      const k = ["orphans", "missing", "drift", "stuck", "failed_retried", "icp_drift", "fixed"];
      const rows = list.map((r) => h("tr", { "data-run-id": r.run_id, "data-state": r.state },
        h("td", null, when(r.started_at)), h("td", null, r.trigger), h("td", null, r.dry_run ? "dry run" : "repair"),
        h("td", null, badge(r.state, r.state)),
        h("td", { class: "n" }, r.report ? seconds(r.report.duration_ms / 1000) : "—"),
        k.map((f) => h("td", { class: "n" }, r.report ? num(r.report[f]) : "—")),
        h("td", { class: "err" }, r.error || "")));
      replace(runs, list.length === 0 ? h("p", { class: "empty" }, "No run recorded yet.") :
        table(null, ["started", "trigger", "mode", "state", "took", "orphans", "missing", "drift", "stuck", "failed retried", "ICP drift", "fixed", "error"], rows, { id: "runs-table" }));
      // A running run finishes without an event on the stream: look again soon.
      clearTimeout(poll);
      if (list.some((r) => r.state === "running") && current && current.name === "reconcile") poll = setTimeout(scheduleRefresh, 1000);
    }
    return { name: "reconcile", nav: "reconcile", title: "Reconcile", el, refresh };
  }

  // ---- start ------------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  route();
})();
