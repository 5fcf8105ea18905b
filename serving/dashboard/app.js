/* Dashboard: one request to /v1/dashboard/data (started by the inline script in index.html before this file
   loads), then every panel drawn with Charts (charts.js). The API key comes from the URL fragment (#key=...,
   never sent to the server in a URL or logged) or the key field, and is kept in this browser's localStorage.
   When every panel is drawn the page sets body[data-ready] and body[data-render-ms] (performance.now(): since
   navigation start) and each panel's data-drawn-ms: the browser test and benchmarks/bench_dashboard.py read them. */
(function () {
  "use strict";
  const C = window.Charts;
  const PRODUCT_COLORS = { "92": "#2f6fde", "95": "#f08c2e", "98": "#d64550", diesel: "#2bb07f", shop: "#8a5cd6",
                           wash: "#20a4c4" };
  const OUTCOME_COLORS = { approve: "#2bb07f", review: "#f08c2e", decline: "#d64550" };
  const TYPE_COLORS = { urban: "#2f6fde", highway: "#d64550", rural: "#2bb07f" };
  const t0 = performance.now();
  const $ = (sel) => document.querySelector(sel);
  const yuan = (fen) => (fen === null || fen === undefined ? null : fen / 100);

  function panel(name) { return document.querySelector('[data-panel="' + name + '"]'); }
  function chartOf(name) { return panel(name).querySelector(".chart"); }
  function message(name, text, isError) {
    const p = panel(name);
    p.dataset.state = isError ? "error" : "empty";
    const c = chartOf(name);
    c.innerHTML = "";
    const d = document.createElement("div");
    d.className = "msg" + (isError ? " error" : "");
    d.textContent = text;
    c.appendChild(d);
  }
  function ok(name) { panel(name).dataset.state = "ok"; }
  function drawn(name) { panel(name).dataset.drawnMs = performance.now().toFixed(1); }
  function shortDate(s) { return String(s).slice(5, 10); }

  let emptyText = "no rows in this window";
  function draw(name, data, fn) {
    if (!data) message(name, "no data", true);
    else if (data.error) message(name, data.error, true);
    else if (!data.rows || !data.rows.length) message(name, emptyText, false);
    else {
      try { fn(data.rows); ok(name); } catch (e) { message(name, "could not draw: " + e.message, true); }
    }
    drawn(name);
  }

  function kpis(p) {
    const box = $("#kpis");
    box.innerHTML = "";
    const sum = (rows, k) => (rows || []).reduce((a, r) => a + (Number(r[k]) || 0), 0);
    const day = (p.sales_by_day || {}).rows || [];
    const risk = (p.risk_kpis || {}).rows || [];
    const pts = (p.points_flow || {}).rows || [];
    const alerts = (p.stock_alerts || {}).rows || [];
    const decisions = sum(risk, "decisions");
    const by = (o) => sum(risk.filter((r) => r.outcome === o), "decisions");
    const none = !day.length;  // no sales in the window: dashes, not zeros that look like a dead network
    const tiles = [
      ["Net sales", none ? "–" : "¥" + C.fmt(yuan(sum(day, "net_fen"))), day.length + " days"],
      ["Purchases", none ? "–" : C.fmt(sum(day, "captured")), none ? "no sales yet" : C.fmt(sum(day, "litres")) + " L"],
      ["Risk decisions", C.fmt(decisions), C.fmt(risk.reduce((a, r) => a + (Number(r.degraded) || 0), 0)) + " degraded"],
      ["Review rate", C.pct(decisions ? by("review") / decisions : null), C.fmt(by("review")) + " to review"],
      ["Decline rate", C.pct(decisions ? by("decline") / decisions : null), C.fmt(by("decline")) + " declined"],
      ["Points issued", C.fmt(sum(pts, "issued")), C.fmt(sum(pts, "redeemed")) + " redeemed"],
      ["Stock alerts", C.fmt(alerts.length), (p.stock_alerts || {}).error ? "model not trained" : "open"],
    ];
    tiles.forEach(([label, value, note]) => {
      const d = document.createElement("div");
      d.className = "kpi";
      d.innerHTML = '<div class="label"></div><div class="value"></div><div class="note"></div>';
      d.children[0].textContent = label; d.children[1].textContent = value; d.children[2].textContent = note;
      box.appendChild(d);
    });
    box.dataset.state = "ok";
    box.dataset.drawnMs = performance.now().toFixed(1);
  }

  function render(p, win) {
    const empty = !!(win && win.empty);
    emptyText = empty ? "no sales in the warehouse yet" : "no rows in this window";
    const banner = $("#empty");
    banner.hidden = !empty;
    kpis(p);
    draw("sales_by_day", p.sales_by_day, (rows) => C.line(chartOf("sales_by_day"), rows.map((r) => shortDate(r.date)),
      [{ name: "net sales (¥)", color: "#2f6fde", values: rows.map((r) => yuan(r.net_fen)) }], { area: true }));
    draw("sales_by_product", p.sales_by_product, (rows) => C.donut(chartOf("sales_by_product"),
      rows.map((r) => ({ label: r.product, value: yuan(r.net_fen) || 0, color: PRODUCT_COLORS[r.product] })),
      { centerLabel: "net ¥" }));
    draw("sales_by_hour", p.sales_by_hour, (rows) => C.bars(chartOf("sales_by_hour"),
      rows.map((r) => String(r.hour_local).padStart(2, "0")),
      [{ name: "litres", color: "#20a4c4", values: rows.map((r) => r.litres) }], { height: 200 }));
    draw("sales_by_station", p.sales_by_station, (rows) => C.hbars(chartOf("sales_by_station"),
      rows.slice(0, 12).map((r) => ({ label: r.station_id, value: yuan(r.net_fen) || 0,
                                       note: r.fraud ? r.fraud + " fraud" : "" })), { labelWidth: 90 }));
    draw("risk_daily", p.risk_daily, (rows) => C.bars(chartOf("risk_daily"), rows.map((r) => shortDate(r.date)),
      ["approved", "reviewed", "declined"].map((k, i) => ({ name: ["approve", "review", "decline"][i],
        color: OUTCOME_COLORS[["approve", "review", "decline"][i]], values: rows.map((r) => r[k]) })),
      { overlay: { name: "review rate", color: "#132238", values: rows.map((r) => r.review_rate) } }));
    draw("risk_kpis", p.risk_kpis, (rows) => C.donut(chartOf("risk_kpis"),
      rows.map((r) => ({ label: r.outcome, value: Number(r.decisions) || 0, color: OUTCOME_COLORS[r.outcome] })),
      { centerLabel: "decisions" }));
    draw("points_flow", p.points_flow, (rows) => C.line(chartOf("points_flow"), rows.map((r) => shortDate(r.date)),
      [{ name: "issued", color: "#2bb07f", values: rows.map((r) => r.issued) },
       { name: "redeemed", color: "#8a5cd6", values: rows.map((r) => r.redeemed) },
       { name: "expired", color: "#7a8b99", values: rows.map((r) => r.expired), dash: true }]));
    draw("churn_segments", p.churn_segments, (rows) => C.hbars(chartOf("churn_segments"),
      rows.map((r) => ({ label: r.segment, value: Number(r.members) || 0,
        color: ["#2bb07f", "#20a4c4", "#f08c2e", "#d64550", "#8a1c26"][Math.min(4, Number(r.action_level) || 0)],
        note: "p=" + C.pct(r.mean_probability) + " · " + (r.action || "") })), { labelWidth: 200 }));
    draw("forecast_vs_actual", p.forecast_vs_actual, (rows) => {
      const labels = rows.map((r) => shortDate(r.date));
      const first = rows.find((r) => r.station_id);
      if (first) $("#fva-title").textContent = "· station " + first.station_id + (first.product ? " · " + first.product : "");
      let divider = -1;
      rows.forEach((r, i) => { if (r.actual !== null && r.actual !== undefined) divider = i; });
      C.line(chartOf("forecast_vs_actual"), labels, [
        { name: "actual litres", color: "#132238", values: rows.map((r) => r.actual) },
        { name: "forecast (80% interval)", color: "#f08c2e", dash: true, values: rows.map((r) => r.forecast),
          band: { lower: rows.map((r) => r.lower), upper: rows.map((r) => r.upper) } },
      ], { divider: divider });
    });
    const density = ((p.member_density || {}).rows || []).map((d) => ({ lat: d.lat, lon: d.lon, members: d.members }));
    draw("stations_map", p.stations_map, (rows) => {
      const maxNet = Math.max.apply(null, rows.map((r) => Number(r.net_fen) || 0).concat([1]));
      // dot size by sales; the largest shrinks as stations get denser, so the density layer stays visible
      const rMax = Math.max(4, Math.min(10, 10 * Math.sqrt(60 / rows.length)));
      C.map(chartOf("stations_map"), rows.map((r) => ({ lat: r.lat, lon: r.lon,
        r: 2 + (rMax - 2) * Math.sqrt((Number(r.net_fen) || 0) / maxNet), color: TYPE_COLORS[r.station_type],
        label: r.station_id + " · " + r.name + " · " + r.station_type + " · ¥" + C.fmt(yuan(r.net_fen)) })), density,
        { legend: Object.keys(TYPE_COLORS).map((k) => ({ label: k + " station", color: TYPE_COLORS[k] })) });
    });
    draw("stock_alerts", p.stock_alerts, (rows) => {
      const keys = Object.keys(rows[0]).filter((k) => k !== "model_version").slice(0, 8);
      C.table(chartOf("stock_alerts"), keys.map((k) => ({ key: k, label: k.replace(/_/g, " "),
        num: typeof rows[0][k] === "number", fmt: (v) => (typeof v === "number" ? C.fmt(v) : v === null ? "–" : String(v)) })),
        rows.slice(0, 25));
    });
  }

  function request(key, days) {
    return fetch("/v1/dashboard/data?days=" + encodeURIComponent(days), { headers: { "X-API-Key": key } });
  }

  async function load(early) {
    const key = $("#key").value.trim();
    const days = $("#days").value;
    if (!key) { $("#status").textContent = "enter an API key with the dashboard:read scope"; return; }
    localStorage.setItem("fuelcard.key", key);
    $("#status").textContent = "loading…";
    const started = early ? early.started : performance.now();
    let res;
    try {
      res = early && early.key === key && early.days === days ? await early.promise : await request(key, days);
    } catch (e) {
      $("#status").textContent = "API not reachable";
      document.body.dataset.rendered = "error";
      return;
    }
    if (!res.ok) {
      $("#status").textContent = res.status === 401 ? "invalid key" : res.status === 403 ? "key lacks dashboard:read"
        : "error " + res.status;
      document.body.dataset.rendered = "error";
      return;
    }
    const body = await res.json();
    const fetched = performance.now();
    render(body.panels || {}, body.window);
    // first render: from navigation start (performance.now() origin) to the first frame showing every panel
    // (a timeout queued from the next animation frame runs once that frame's style, layout and paint are done)
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    const ms = performance.now();
    document.body.dataset.renderMs = ms.toFixed(0);
    document.body.dataset.scriptStartMs = t0.toFixed(0);
    document.body.dataset.fetchMs = (fetched - started).toFixed(0);
    document.body.dataset.drawMs = (ms - fetched).toFixed(0);
    document.body.dataset.cachedS = String(body.cached_s);
    document.body.dataset.computeMs = String(body.compute_ms);
    document.body.dataset.rendered = "1";
    document.body.dataset.ready = "1";
    $("#render-ms").textContent = "first render " + ms.toFixed(0) + " ms" +
      (body.cached_s > 0 ? " · data " + Math.round(body.cached_s) + " s old" : "");
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
  }

  const early = window.__dashboardEarly || null;  // the request index.html started while this file loaded
  if (early) {
    $("#key").value = early.key;
    if (!Array.from($("#days").options).some((o) => o.value === early.days)) {
      const o = document.createElement("option");
      o.value = early.days; o.textContent = early.days + " days";
      $("#days").appendChild(o);
    }
    $("#days").value = early.days;
  }
  else {
    const m = /key=([^&]+)/.exec(location.hash || "");
    if (m) { $("#key").value = decodeURIComponent(m[1]); }
    else { $("#key").value = localStorage.getItem("fuelcard.key") || ""; }
  }
  if (/key=|days=/.test(location.hash || "")) history.replaceState(null, "", location.pathname);
  $("#controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("#days").addEventListener("change", () => load());
  load(early);
  setInterval(() => { if (document.visibilityState === "visible" && $("#key").value) load(); }, 60000);
})();
