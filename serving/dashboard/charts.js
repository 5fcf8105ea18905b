/* Small self-written SVG charts (no CDN, no dependencies): line/area with bands, bars, stacked bars,
   horizontal bars, donut, scatter map with a density layer. Each function takes a container element,
   data and options, and replaces the container's content with an <svg>. */
(function (global) {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fde", "#f08c2e", "#2bb07f", "#d64550", "#8a5cd6", "#20a4c4", "#b8860b", "#7a8b99"];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    const t = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function svg(container, w, h) {
    container.innerHTML = "";
    const s = el("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "xMidYMid meet", role: "img" }, container);
    tipHost(s);
    return s;
  }
  function fmt(v) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "B";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a >= 10 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(2);
  }
  function pct(v) { return v === null || v === undefined || isNaN(v) ? "–" : (100 * v).toFixed(v < 0.01 ? 2 : 1) + "%"; }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  const tip = (function () {
    let d = null;
    return {
      show(evt, s) {
        if (!d) { d = document.createElement("div"); d.className = "tip"; document.body.appendChild(d); }
        d.textContent = s; d.style.display = "block";
        d.style.left = (evt.clientX + 12) + "px"; d.style.top = (evt.clientY + 12) + "px";
      },
      hide() { if (d) d.style.display = "none"; },
    };
  })();
  /* tooltips: one attribute per mark and one pair of listeners per chart (no per-mark nodes or listeners) */
  function hover(node, s) { node.setAttribute("data-tip", s); }
  function tipHost(svgEl) {
    svgEl.addEventListener("mousemove", (e) => {
      const s = e.target && e.target.getAttribute && e.target.getAttribute("data-tip");
      if (s) tip.show(e, s); else tip.hide();
    });
    svgEl.addEventListener("mouseleave", tip.hide);
  }
  function legend(container, items) {
    const div = document.createElement("div");
    div.className = "legend";
    items.forEach((it) => {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = it.color;
      if (it.dash) i.style.opacity = 0.35;
      span.appendChild(i);
      span.appendChild(document.createTextNode(it.label));
      div.appendChild(span);
    });
    container.appendChild(div);
  }
  function yAxis(g, x0, x1, y, max, ticks, fmtf) {
    const grid = el("g", { class: "grid" }, g);
    for (let i = 0; i <= ticks; i++) {
      const v = (max * i) / ticks;
      const yy = y(v);
      el("line", { x1: x0, x2: x1, y1: yy, y2: yy }, grid);
      text(g, x0 - 6, yy + 4, (fmtf || fmt)(v), { "text-anchor": "end" });
    }
  }

  /* series: [{name, color, values:[numbers|null], dash, band:{lower:[], upper:[]}}], labels: x labels */
  function line(container, labels, series, opts) {
    opts = opts || {};
    const W = 760, H = opts.height || 240, L = 54, R = opts.right ? 48 : 12, T = 10, B = 28;
    container.innerHTML = "";
    legend(container, series.map((s) => ({ label: s.name, color: s.color, dash: s.band })));
    const host = document.createElement("div");
    container.appendChild(host);
    const s = svg(host, W, H);
    let max = 0;
    series.forEach((se) => {
      if (se.axis === "right") return;
      se.values.forEach((v) => { if (v > max) max = v; });
      if (se.band) se.band.upper.forEach((v) => { if (v > max) max = v; });
    });
    max = niceMax(max);
    const n = Math.max(labels.length, 1);
    const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    yAxis(s, L, W - R, y, max, 4, opts.fmt);
    const step = Math.max(1, Math.ceil(n / 8));
    labels.forEach((lab, i) => { if (i % step === 0) text(s, x(i), H - 8, lab, { "text-anchor": "middle" }); });
    if (opts.divider !== undefined && opts.divider >= 0) {
      el("line", { x1: x(opts.divider), x2: x(opts.divider), y1: T, y2: H - B, stroke: "#9aa5b1",
                   "stroke-dasharray": "4 3" }, s);
      text(s, x(opts.divider) + 4, T + 10, "today", { class: "label" });
    }
    series.forEach((se) => {
      if (se.axis === "right") return;
      if (se.band) {
        let top = "", bottom = "";
        se.band.upper.forEach((v, i) => { if (v !== null && v !== undefined) top += (top ? "L" : "M") + x(i) + "," + y(v); });
        for (let i = se.band.lower.length - 1; i >= 0; i--) {
          const v = se.band.lower[i];
          if (v !== null && v !== undefined) bottom += "L" + x(i) + "," + y(v);
        }
        if (top) el("path", { d: top + bottom + "Z", fill: se.color, "fill-opacity": 0.18, stroke: "none" }, s);
      }
      let d = "";
      se.values.forEach((v, i) => {
        if (v === null || v === undefined || isNaN(v)) { return; }
        d += (d && se.values[i - 1] !== null && se.values[i - 1] !== undefined ? "L" : "M") + x(i) + "," + y(v);
      });
      if (opts.area && !se.band) {
        const pts = se.values.map((v, i) => [x(i), y(v || 0)]);
        const a = "M" + pts.map((p) => p.join(",")).join("L") + "L" + x(n - 1) + "," + y(0) + "L" + x(0) + "," + y(0) + "Z";
        el("path", { d: a, fill: se.color, "fill-opacity": 0.12 }, s);
      }
      el("path", { d: d, fill: "none", stroke: se.color, "stroke-width": 2, "stroke-dasharray": se.dash ? "5 4" : "" }, s);
      se.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const c = el("circle", { cx: x(i), cy: y(v), r: 6, fill: "transparent" }, s);
        hover(c, labels[i] + " · " + se.name + ": " + (opts.fmt || fmt)(v));
      });
    });
    const right = series.filter((se) => se.axis === "right");
    if (right.length) {
      let rmax = 0;
      right.forEach((se) => se.values.forEach((v) => { if (v > rmax) rmax = v; }));
      rmax = rmax > 0 ? rmax * 1.15 : 1;
      const yr = (v) => T + (H - T - B) * (1 - v / rmax);
      for (let i = 0; i <= 4; i++) text(s, W - R + 6, yr((rmax * i) / 4) + 4, pct((rmax * i) / 4));
      right.forEach((se) => {
        let d = "";
        se.values.forEach((v, i) => { if (v !== null && v !== undefined) d += (d ? "L" : "M") + x(i) + "," + yr(v); });
        el("path", { d: d, fill: "none", stroke: se.color, "stroke-width": 2 }, s);
      });
    }
    return s;
  }

  /* stacked vertical bars: labels, stacks [{name,color,values}] ; optional overlay line (right axis, ratio) */
  function bars(container, labels, stacks, opts) {
    opts = opts || {};
    const W = 760, H = opts.height || 240, L = 54, R = opts.overlay ? 48 : 12, T = 10, B = 28;
    container.innerHTML = "";
    const items = stacks.map((s) => ({ label: s.name, color: s.color }));
    if (opts.overlay) items.push({ label: opts.overlay.name, color: opts.overlay.color });
    if (stacks.length > 1 || opts.overlay) legend(container, items);
    const host = document.createElement("div");
    container.appendChild(host);
    const s = svg(host, W, H);
    const n = Math.max(labels.length, 1);
    const totals = labels.map((_, i) => stacks.reduce((a, st) => a + (st.values[i] || 0), 0));
    const max = niceMax(Math.max.apply(null, totals.concat([0])));
    const bw = (W - L - R) / n;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    yAxis(s, L, W - R, y, max, 4, opts.fmt);
    const step = Math.max(1, Math.ceil(n / 12));
    labels.forEach((lab, i) => {
      let base = 0;
      stacks.forEach((st) => {
        const v = st.values[i] || 0;
        if (v > 0) {
          const r = el("rect", { x: L + i * bw + bw * 0.12, y: y(base + v), width: bw * 0.76,
                                 height: Math.max(0.5, y(base) - y(base + v)), fill: st.color, rx: 2 }, s);
          hover(r, lab + " · " + st.name + ": " + (opts.fmt || fmt)(v));
        }
        base += v;
      });
      if (i % step === 0) text(s, L + i * bw + bw / 2, H - 8, lab, { "text-anchor": "middle" });
    });
    if (opts.overlay) {
      const vals = opts.overlay.values;
      let rmax = Math.max.apply(null, vals.filter((v) => v !== null).concat([0]));
      rmax = rmax > 0 ? rmax * 1.15 : 1;
      const yr = (v) => T + (H - T - B) * (1 - v / rmax);
      let d = "";
      vals.forEach((v, i) => { if (v !== null && v !== undefined) d += (d ? "L" : "M") + (L + i * bw + bw / 2) + "," + yr(v); });
      el("path", { d: d, fill: "none", stroke: opts.overlay.color, "stroke-width": 2.5 }, s);
      for (let i = 0; i <= 4; i++) text(s, W - R + 6, yr((rmax * i) / 4) + 4, pct((rmax * i) / 4));
    }
    return s;
  }

  /* horizontal bars: rows [{label, value, color?, note?}] */
  function hbars(container, rows, opts) {
    opts = opts || {};
    const W = 760, rowH = 24, L = opts.labelWidth || 150, R = 70, T = 4;
    const H = T * 2 + rowH * Math.max(rows.length, 1);
    const s = svg(container, W, H);
    const max = niceMax(Math.max.apply(null, rows.map((r) => r.value).concat([0])));
    rows.forEach((r, i) => {
      const yy = T + i * rowH;
      text(s, L - 8, yy + rowH * 0.68, r.label, { "text-anchor": "end", class: "label" });
      const w = Math.max(1, ((W - L - R) * r.value) / max);
      const rect = el("rect", { x: L, y: yy + 4, width: w, height: rowH - 8, rx: 3, fill: r.color || COLORS[0] }, s);
      hover(rect, r.label + ": " + (opts.fmt || fmt)(r.value) + (r.note ? " · " + r.note : ""));
      text(s, L + w + 6, yy + rowH * 0.68, (opts.fmt || fmt)(r.value) + (r.note ? "  " + r.note : ""));
    });
    return s;
  }

  /* donut: rows [{label, value, color}] */
  function donut(container, rows, opts) {
    opts = opts || {};
    const W = 360, H = 220, cx = 110, cy = 110, r = 90, ir = 56;
    const s = svg(container, W, H);
    const total = rows.reduce((a, r) => a + r.value, 0) || 1;
    let a0 = -Math.PI / 2;
    rows.forEach((row, i) => {
      const a1 = a0 + (2 * Math.PI * row.value) / total;
      const large = a1 - a0 > Math.PI ? 1 : 0;
      const p = (rad, ang) => [cx + rad * Math.cos(ang), cy + rad * Math.sin(ang)];
      const [x0, y0] = p(r, a0), [x1, y1] = p(r, Math.min(a1, a0 + 2 * Math.PI - 1e-4));
      const [x2, y2] = p(ir, Math.min(a1, a0 + 2 * Math.PI - 1e-4)), [x3, y3] = p(ir, a0);
      const path = el("path", { d: "M" + x0 + "," + y0 + "A" + r + "," + r + " 0 " + large + " 1 " + x1 + "," + y1 +
        "L" + x2 + "," + y2 + "A" + ir + "," + ir + " 0 " + large + " 0 " + x3 + "," + y3 + "Z",
        fill: row.color || COLORS[i % COLORS.length] }, s);
      hover(path, row.label + ": " + (opts.fmt || fmt)(row.value) + " (" + pct(row.value / total) + ")");
      const ly = 24 + i * 22;
      el("rect", { x: 236, y: ly - 10, width: 12, height: 12, rx: 2, fill: row.color || COLORS[i % COLORS.length] }, s);
      text(s, 254, ly, row.label + "  " + pct(row.value / total), { class: "label" });
      a0 = a1;
    });
    text(s, cx, cy - 2, (opts.fmt || fmt)(total), { "text-anchor": "middle", class: "label", "font-size": 18 });
    text(s, cx, cy + 16, opts.centerLabel || "total", { "text-anchor": "middle" });
    return s;
  }

  /* map: points [{lat, lon, r, color, label}], density [{lat, lon, members}] */
  function map(container, points, density, opts) {
    opts = opts || {};
    const W = 760, H = 420, P = 16;
    container.innerHTML = "";
    legend(container, (opts.legend || []).concat([{ label: "member homes (density)", color: "#8a5cd6" }]));
    const host = document.createElement("div");
    container.appendChild(host);
    const s = svg(host, W, H);
    const all = points.concat(density);
    if (!all.length) return s;
    let la0 = Infinity, la1 = -Infinity, lo0 = Infinity, lo1 = -Infinity;
    all.forEach((p) => { la0 = Math.min(la0, p.lat); la1 = Math.max(la1, p.lat); lo0 = Math.min(lo0, p.lon); lo1 = Math.max(lo1, p.lon); });
    const k = Math.cos(((la0 + la1) / 2) * Math.PI / 180);
    const spanX = Math.max((lo1 - lo0) * k, 1e-3), spanY = Math.max(la1 - la0, 1e-3);
    const sc = Math.min((W - 2 * P) / spanX, (H - 2 * P) / spanY);
    const ox = (W - sc * spanX) / 2, oy = (H - sc * spanY) / 2;
    const X = (lon) => ox + (lon - lo0) * k * sc, Y = (lat) => H - oy - (lat - la0) * sc;
    el("rect", { x: 0, y: 0, width: W, height: H, fill: "#eef2f7", rx: 6 }, s);
    /* density: one path per shade (6 levels of sqrt(members/max)), each cell a square sub-path: a few nodes
       whatever the number of cells */
    const dmax = Math.max.apply(null, density.map((d) => d.members).concat([1]));
    const cell = Math.max(3, (opts.cellDeg || 0.02) * sc * 1.1);
    const LEVELS = 6, paths = [], lo = [], hi = [];
    density.forEach((d) => {
      const lv = Math.min(LEVELS - 1, Math.floor(Math.sqrt(d.members / dmax) * LEVELS));
      paths[lv] = (paths[lv] || "") + "M" + (X(d.lon) - cell / 2).toFixed(1) + " " + (Y(d.lat) - cell / 2).toFixed(1) +
        "h" + cell.toFixed(1) + "v" + cell.toFixed(1) + "h-" + cell.toFixed(1) + "z";
      lo[lv] = Math.min(lo[lv] === undefined ? Infinity : lo[lv], d.members);
      hi[lv] = Math.max(hi[lv] || 0, d.members);
    });
    paths.forEach((d, lv) => {
      if (!d) return;
      const p = el("path", { d: d, fill: "#8a5cd6", "fill-opacity": (0.12 + 0.7 * (lv + 0.5) / LEVELS).toFixed(2) }, s);
      hover(p, (lo[lv] === hi[lv] ? lo[lv] : lo[lv] + "–" + hi[lv]) + " members live in each of these cells");
    });
    const dots = el("g", { "fill-opacity": 0.85, stroke: "#fff", "stroke-width": 1 }, s);
    points.forEach((p) => {
      const c = el("circle", { cx: X(p.lon).toFixed(1), cy: Y(p.lat).toFixed(1), r: (p.r || 4).toFixed(1),
                               fill: p.color || COLORS[0] }, dots);
      hover(c, p.label);
    });
    return s;
  }

  function table(container, columns, rows) {
    container.innerHTML = "";
    const t = document.createElement("table");
    const head = t.createTHead().insertRow();
    columns.forEach((c) => { const th = document.createElement("th"); th.textContent = c.label; head.appendChild(th); });
    const body = t.createTBody();
    rows.forEach((r) => {
      const tr = body.insertRow();
      columns.forEach((c) => {
        const td = tr.insertCell();
        const v = c.get ? c.get(r) : r[c.key];
        td.textContent = c.fmt ? c.fmt(v, r) : (v === null || v === undefined ? "–" : String(v));
        if (c.num) td.className = "num";
        if (c.cls) td.className += " " + c.cls(v, r);
      });
    });
    container.appendChild(t);
  }

  global.Charts = { line, bars, hbars, donut, map, table, fmt, pct, COLORS };
})(window);
