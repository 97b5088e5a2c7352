// Small SVG charts for the autoroute pages: stacked bars over time, lines,
// horizontal bars. No dependencies; every mark has a <title> tooltip.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4f6bed", "#e8833a", "#2bb07f", "#d64f6b", "#8a5cd6", "#c9a227", "#3aa6c9",
                   "#7a8a99", "#b5579e", "#5c9e3a", "#9e6b3a", "#3a5c9e"];
  const W = 560, H = 230, M = {l: 52, r: 12, t: 10, b: 30};

  function el(name, attrs, parent, text) {
    const n = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  function tip(node, text) { el("title", {}, node, text); return node; }
  function svg(host, h, w) {
    host.innerHTML = "";
    return el("svg", {viewBox: `0 0 ${w || W} ${h || H}`, role: "img", class: "chart"}, host);
  }
  function nice(max) {
    if (!(max > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(max))), f = max / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }
  function timeLabel(iso, all) {
    const d = new Date(iso), first = new Date(all[0]), last = new Date(all[all.length - 1]);
    const sameDay = first.toDateString() === last.toDateString();
    const hm = d.toISOString().slice(11, 16);
    return sameDay ? hm : d.toISOString().slice(5, 10) + (hm === "00:00" ? "" : " " + hm);
  }
  function legend(host, names, colors) {
    const box = document.createElement("div");
    box.className = "legend";
    names.forEach((n, i) => {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${colors[i]}"></i>`;
      item.appendChild(document.createTextNode(n));
      box.appendChild(item);
    });
    host.appendChild(box);
  }
  function axes(s, ymax, yfmt, labels, xAt) {
    const ih = H - M.t - M.b;
    for (let k = 0; k <= 5; k++) {                       // 1, 2, 5 x 10^n over 5 steps: round ticks
      const v = ymax * k / 5, y = M.t + ih - ih * k / 5;
      el("line", {x1: M.l, x2: W - M.r, y1: y, y2: y, class: "grid"}, s);
      el("text", {x: M.l - 6, y: y + 4, class: "tick", "text-anchor": "end"}, s, yfmt(v));
    }
    const every = Math.max(1, Math.ceil(labels.length / 8));
    labels.forEach((lab, i) => {
      if (i % every) return;
      el("text", {x: xAt(i), y: H - M.b + 16, class: "tick", "text-anchor": "middle"}, s, timeLabel(lab, labels));
    });
  }
  function empty(host, msg) { host.innerHTML = `<p class="nodata">${msg || "no data in this window yet"}</p>`; }

  // series: {name: [value per label]}; stacked vertical bars over time buckets
  function bars(host, labels, series, opts = {}) {
    const names = Object.keys(series || {});
    if (!labels || !labels.length || !names.length) return empty(host);
    const yfmt = opts.yfmt || (v => String(Math.round(v)));
    const totals = labels.map((_, i) => names.reduce((a, n) => a + (series[n][i] || 0), 0));
    const ymax = opts.yfmt ? nice(Math.max(...totals)) : Math.max(nice(Math.max(...totals)), 5);  // counts: whole ticks
    const s = svg(host), iw = W - M.l - M.r, ih = H - M.t - M.b;
    const bw = iw / labels.length, pad = Math.max(Math.min(bw * 0.2, 12), bw - 70);  // bars at most 70 wide
    const xAt = i => M.l + bw * i + bw / 2;
    axes(s, ymax, yfmt, labels, xAt);
    const colors = names.map((_, i) => PALETTE[i % PALETTE.length]);
    const label = opts.names || (n => n);
    labels.forEach((lab, i) => {
      let acc = 0;
      names.forEach((n, j) => {
        const v = series[n][i] || 0;
        if (!v) return;
        const y0 = M.t + ih - ih * acc / ymax, h = ih * v / ymax;
        tip(el("rect", {x: M.l + bw * i + pad / 2, y: y0 - h, width: Math.max(bw - pad, 1), height: h,
                        fill: colors[j], class: "mark", "data-series": n}, s),
            `${label(n)}: ${yfmt(v)} (${timeLabel(lab, labels)})`);
        acc += v;
      });
    });
    legend(host, names.map(label), colors);
  }

  // series: {name: [value or null per label]}; lines with dots
  function lines(host, labels, series, opts = {}) {
    const names = Object.keys(series || {});
    const vals = names.flatMap(n => series[n].filter(v => v !== null && v !== undefined));
    if (!labels || !labels.length || !vals.length) return empty(host);
    const yfmt = opts.yfmt || (v => String(+v.toFixed(3)));
    const ymax = opts.ymax || nice(Math.max(...vals));
    const s = svg(host), iw = W - M.l - M.r, ih = H - M.t - M.b;
    const step = labels.length > 1 ? iw / (labels.length - 1) : 0;
    const xAt = i => labels.length > 1 ? M.l + step * i : M.l + iw / 2;
    const yAt = v => M.t + ih - ih * Math.min(v, ymax) / ymax;
    axes(s, ymax, yfmt, labels, xAt);
    const colors = names.map((_, i) => (opts.colors || PALETTE)[i % PALETTE.length]);
    if (opts.target !== undefined) {
      const y = yAt(opts.target);
      el("line", {x1: M.l, x2: W - M.r, y1: y, y2: y, stroke: "#d64f6b", "stroke-dasharray": "5 4", class: "target"}, s);
      el("text", {x: W - M.r, y: y - 4, class: "tick", "text-anchor": "end"}, s, opts.targetLabel || "target");
    }
    names.forEach((n, j) => {
      let d = "";
      series[n].forEach((v, i) => {
        if (v === null || v === undefined) return;
        d += (d ? " L" : "M") + xAt(i).toFixed(1) + " " + yAt(v).toFixed(1);
      });
      if (d.includes("L")) el("path", {d, fill: "none", stroke: colors[j], "stroke-width": 2.2, class: "mark"}, s);
      series[n].forEach((v, i) => {
        if (v === null || v === undefined) return;
        tip(el("circle", {cx: xAt(i), cy: yAt(v), r: 3.6, fill: colors[j], class: "mark", "data-series": n}, s),
            `${n}: ${yfmt(v)} (${timeLabel(labels[i], labels)})`);
      });
    });
    legend(host, names, colors);
  }

  // items: [{label, value, note}]; horizontal bars
  function hbars(host, items, opts = {}) {
    if (!items || !items.length) return empty(host, opts.emptyText);
    const xfmt = opts.xfmt || (v => String(+v.toFixed(3)));
    const xmax = opts.xmax || nice(Math.max(...items.map(i => i.value)));
    const row = 26, h = Math.max(items.length * row + 16, 40), lw = opts.labelWidth || 190, wd = opts.width || W;
    const s = svg(host, h, wd), iw = wd - lw - M.r - 70;
    items.forEach((it, i) => {
      const y = 8 + i * row, w = Math.max(iw * Math.max(it.value, 0) / xmax, 1.5);
      el("text", {x: lw - 8, y: y + 14, class: "tick", "text-anchor": "end"}, s, it.label);
      tip(el("rect", {x: lw, y, width: w, height: row - 8, rx: 3,
                      fill: it.color || PALETTE[(opts.colorBy ? i : 0) % PALETTE.length], class: "mark"}, s),
          `${it.label}: ${xfmt(it.value)}${it.note ? " (" + it.note + ")" : ""}`);
      el("text", {x: lw + w + 6, y: y + 14, class: "value"}, s, xfmt(it.value) + (it.note ? " · " + it.note : ""));
    });
  }
  return {bars, lines, hbars, PALETTE};
})();
