// /dashboard: fetch /admin/dashboard (admin key when the service has keys) and draw it.
"use strict";
(() => {
  const $ = id => document.getElementById(id);
  const pct = v => v === null || v === undefined ? "–" : (100 * v).toFixed(v < 0.1 && v > 0 ? 1 : 0) + "%";
  const usd = v => v === null || v === undefined ? "–" : "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(2));
  const ms = v => v === null || v === undefined ? "–" : (v >= 10 ? v.toFixed(0) : v.toFixed(2)) + " ms";

  function headers() {
    const k = sessionStorage.getItem("autoroute-admin-key");
    return k ? {"authorization": "Bearer " + k} : {};
  }
  async function load() {
    const q = new URLSearchParams({days: $("window").value});
    if ($("org").value) q.set("org", $("org").value);
    const r = await fetch(`/admin/dashboard?${q}`, {headers: headers()});
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) {
      $("dash").hidden = true;
      $("keybox").hidden = false;
      $("keymsg").textContent = body.error || "This dashboard needs an admin key.";
      return;
    }
    if (!r.ok) { $("meta").textContent = "could not load: " + (body.error || r.status); $("dash").hidden = false; return; }
    $("keybox").hidden = true;
    $("dash").hidden = false;
    draw(body);
  }
  function kpi(label, value, id) {
    return `<div class="kpi" id="${id}"><div class="v">${value}</div><div class="l">${label}</div></div>`;
  }
  function orgs(d) {
    const sel = $("org"), keep = sel.value;
    sel.innerHTML = "";
    sel.appendChild(new Option("all orgs", ""));
    for (const o of new Set([...(d.orgs || []), ...(keep ? [keep] : [])])) sel.appendChild(new Option(o, o));
    sel.value = keep;
  }
  function draw(d) {
    orgs(d);
    const t = d.totals || {};
    const name = m => (d.names || {})[m] || m;
    const task = k => (d.task_labels || {})[k] || k;
    $("meta").textContent = d.empty ? "No decisions in this window yet." :
      `${t.all_decisions} decisions (${t.decisions} by Auto, ${t.picked} for a model the user picked), ` +
      `interval ${d.bucket} (times in UTC), updated ${new Date(d.generated_at).toLocaleTimeString()}`;
    $("kpis").innerHTML = [
      kpi("Auto decisions", t.decisions ?? 0, "k-decisions"),
      kpi("override rate", pct(t.override_rate), "k-override"),
      kpi(`estimated savings vs always ${d.baseline_name}`, pct(t.savings), "k-savings"),
      kpi("decision latency p50 / p99", `${ms(t.p50_ms)} / ${ms(t.p99_ms)}`, "k-latency"),
      kpi(`mean rating (${t.ratings ?? 0} ratings)`, t.mean_rating ? t.mean_rating.toFixed(2) + " / 5" : "–", "k-rating"),
    ].join("");
    const b = d.buckets || [];
    Charts.bars($("c-model"), b, d.by_model, {names: name});
    Charts.bars($("c-task"), b, d.by_task, {names: task});
    Charts.bars($("c-tier"), b, d.by_tier);
    Charts.lines($("c-override"), b, d.override_rate, {yfmt: v => (100 * v).toFixed(0) + "%", ymax: 1,
                                                      target: 0.1, targetLabel: "target 10%"});
    $("spend-sub").textContent = `cumulative, USD: Auto (overrides and regenerations included) against always ` +
      `${d.baseline_name} on the same requests; savings ${pct(t.savings)}`;
    Charts.lines($("c-spend"), b, d.spend, {yfmt: usd});
    Charts.lines($("c-latency"), b, d.latency, {yfmt: v => v.toFixed(v >= 10 ? 0 : v >= 1 ? 1 : 2)});
    Charts.hbars($("c-pairs"), (d.override_pairs || []).map(p => ({label: `${name(p.from)} → ${name(p.to)}`,
      value: p.count})), {xfmt: v => String(Math.round(v)), emptyText: "no overrides in this window", labelWidth: 260});
    Charts.hbars($("c-ratings"), (d.ratings || []).map(r => ({label: name(r.model), value: r.mean,
      note: `${r.count} rating${r.count === 1 ? "" : "s"}`})), {xmax: 5, xfmt: v => v.toFixed(2), colorBy: true,
      emptyText: "no ratings in this window"});
    drawArms(d.arms || []);
  }
  function drawArms(arms) {
    const host = $("arms");
    host.innerHTML = "";
    $("arms-sub").textContent = arms.length > 1 ?
      `${arms.length} arms split by a stable hash of the user; each bar is one arm (decisions made by Auto)` :
      arms.length === 1 ? `one arm: every Auto decision came from the ${arms[0].arm}; no A/B test is running` :
      "no Auto decisions in this window";
    if (!arms.length) return;
    const metrics = [["override rate", "override_rate", pct, 1], ["regenerate rate", "regenerate_rate", pct, 1],
                     ["estimated savings", "savings", pct, 1], ["cost per decision", "cost_per_decision", usd, 0],
                     ["mean rating", "mean_rating", v => v === null ? "–" : v.toFixed(2), 5],
                     ["latency p99 (ms)", "p99_ms", v => v === null ? "–" : v.toFixed(1), 0],
                     ["decisions", "decisions", v => String(v), 0]];
    for (const [label, key, fmt, max] of metrics) {
      const box = document.createElement("div");
      box.innerHTML = `<div class="sub" style="margin:4px 0 0">${label}</div>`;
      const chart = document.createElement("div");
      chart.className = "arm-chart";
      chart.dataset.metric = key;
      box.appendChild(chart);
      host.appendChild(box);
      const items = arms.map((a, i) => ({label: a.arm, value: a[key] ?? 0, color: Charts.PALETTE[i]}));
      const top = Math.max(...items.map(i => i.value));
      Charts.hbars(chart, items, {xfmt: v => fmt(v), labelWidth: 110, width: 300,
                                  xmax: max && top <= max ? max : undefined});
    }
  }
  $("refresh").onclick = load;
  $("window").onchange = load;
  $("org").onchange = load;
  $("keyform").onsubmit = ev => {
    ev.preventDefault();
    sessionStorage.setItem("autoroute-admin-key", $("key").value.trim());
    load();
  };
  load();
})();
