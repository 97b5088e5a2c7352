// /ui: a chat page with the Auto model picker. Answers come from the service's
// OpenAI-compatible /v1/chat/completions; overrides, regenerations and ratings
// go to /feedback for the decision the answer belongs to.
"use strict";
(() => {
  const $ = id => document.getElementById(id);
  const state = {turns: [], names: {}, taskLabels: {}};
  const store = window.localStorage;

  // ----------------------------------------------------------------- settings
  if (!store.getItem("autoroute-user")) store.setItem("autoroute-user", "user-" + Math.random().toString(36).slice(2, 10));
  $("user").value = store.getItem("autoroute-user");
  $("apikey").value = store.getItem("autoroute-key") || "";
  $("user").onchange = () => store.setItem("autoroute-user", $("user").value.trim());
  $("apikey").onchange = () => store.setItem("autoroute-key", $("apikey").value.trim());
  const user = () => $("user").value.trim() || null;
  function headers() {
    const h = {"content-type": "application/json"}, k = $("apikey").value.trim();
    if (k) h["authorization"] = "Bearer " + k;
    return h;
  }
  async function post(path, body) {
    const r = await fetch(path, {method: "POST", headers: headers(), body: JSON.stringify(body)});
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = data.error, msg = typeof e === "string" ? e : (e && e.message) || `HTTP ${r.status}`;
      throw new Error(msg);
    }
    return data;
  }

  // ------------------------------------------------------------------ picker
  async function loadModels() {
    const r = await fetch("/models");
    if (!r.ok) return;
    const body = await r.json();
    const sel = $("model");
    sel.innerHTML = "";
    for (const m of body.models) {
      state.names[m.id] = m.display_name;
      const o = new Option(m.display_name, m.id);
      if (m.id !== "auto") o.title = `${m.provider}; $${m.price_input ?? "?"} / $${m.price_output ?? "?"} per 1M tokens in / out`;
      else o.title = m.description;
      sel.appendChild(o);
    }
    const g = document.createElement("optgroup");
    g.label = "Auto modes";
    for (const m of body.auto_modes) { state.names[m.id] = m.display_name; g.appendChild(new Option(m.display_name, m.id)); }
    sel.appendChild(g);
    sel.value = "auto";
  }
  const name = id => state.names[id] || id;

  // ---------------------------------------------------------------- answers
  function history(turn) {
    const out = [];
    for (const t of state.turns) {
      out.push({role: "user", content: t.prompt});
      if (t === turn) break;
      if (t.answer) out.push({role: "assistant", content: t.answer});
    }
    return out;
  }
  async function complete(turn, model) {
    const body = {model, messages: history(turn)};
    if (user()) body.user = user();
    const data = await post("/v1/chat/completions", body);
    const d = data.autoroute || {};
    return {text: ((data.choices || [])[0] || {}).message?.content ?? "", decision: d};
  }
  function autoLabel(d) {
    if (d.served_model && d.served_model !== d.selected_model) {       // the upstream failed: a fallback answered
      return `${name(d.served_model)} - auto-selected (${d.display_name} was unavailable)`;
    }
    // the reason's own head: "Claude Sonnet 4, auto-selected for coding (...)" -> "Claude Sonnet 4 - auto-selected for coding"
    const head = (d.reason || "").split(" (")[0].split(";")[0];
    if (head.startsWith(`${d.display_name}, auto-selected`)) return head.replace(", auto-selected", " - auto-selected");
    const task = d.task && d.task !== "general" ? ` for ${d.task.replace(/_/g, " ")}` : "";
    return `${d.display_name || name(d.served_model)} - auto-selected${task}`;
  }

  function why(d) {
    // "Claude Sonnet 4, auto-selected for debugging (code with a request to fix it)" -> "Why: code with ..."
    const m = /^.*?, auto-selected[^(]*\((.*)\)(.*)$/.exec(d.reason || "");
    return m ? "Why: " + m[1] + m[2] : d.reason || "";
  }

  function render(turn) {
    const box = turn.node;
    box.innerHTML = "";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    box.appendChild(bubble);
    if (turn.pending) { bubble.innerHTML = `<span class="muted">${turn.pending}</span>`; return; }
    if (turn.error && !turn.answer) {
      bubble.classList.add("error");
      bubble.textContent = "The request failed: " + turn.error;
      return;
    }
    const head = document.createElement("div");
    head.className = "answer-head";
    const label = document.createElement("span");
    label.className = "model-label";
    label.textContent = turn.label;
    head.appendChild(label);
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = turn.chip;
    head.appendChild(chip);
    bubble.appendChild(head);
    if (turn.reason) {
      const reason = document.createElement("div");
      reason.className = "reason";
      reason.textContent = turn.reason;
      bubble.appendChild(reason);
    }
    const ans = document.createElement("div");
    ans.className = "answer";
    ans.textContent = turn.answer;
    bubble.appendChild(ans);

    const actions = document.createElement("div");
    actions.className = "actions";
    // alternatives on hover; one click regenerates with that model and sends the override
    const wrap = document.createElement("span");
    wrap.className = "alts-wrap";
    const sw = document.createElement("button");
    sw.type = "button";
    sw.className = "switch";
    sw.textContent = "Switch model ▾";
    sw.onclick = () => wrap.classList.toggle("open");
    wrap.appendChild(sw);
    const pop = document.createElement("div");
    pop.className = "alts";
    pop.innerHTML = `<div class="title">Regenerate this answer with another model</div>`;
    for (const a of turn.alternatives) {
      if (a.model === turn.model) continue;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "alt";
      b.dataset.model = a.model;
      const q = a.quality !== undefined ? `quality ${(100 * a.quality).toFixed(0)}%` : "";
      const c = a.estimated_cost !== null && a.estimated_cost !== undefined ? ` · ~$${a.estimated_cost.toPrecision(2)}` : "";
      b.innerHTML = `<span></span><span class="meta"></span>`;
      b.firstChild.textContent = a.display_name || name(a.model);
      b.lastChild.textContent = q + c;
      b.onclick = () => { wrap.classList.remove("open"); override(turn, a.model); };
      pop.appendChild(b);
    }
    wrap.appendChild(pop);
    actions.appendChild(wrap);
    const regen = document.createElement("button");
    regen.type = "button";
    regen.className = "regenerate";
    regen.textContent = "Regenerate";
    regen.onclick = () => regenerate(turn);
    actions.appendChild(regen);
    const stars = document.createElement("span");
    stars.className = "stars";
    stars.title = "Rate this answer";
    for (let i = 1; i <= 5; i++) {
      const s = document.createElement("button");
      s.type = "button";
      s.textContent = "★";
      s.dataset.rating = i;
      s.setAttribute("aria-label", `rate ${i} of 5`);
      if (turn.rating && i <= turn.rating) s.className = "on";
      s.onclick = () => rate(turn, i);
      stars.appendChild(s);
    }
    actions.appendChild(stars);
    if (turn.note) {
      const note = document.createElement("span");
      note.className = "note" + (turn.noteError ? " error" : "");
      note.textContent = turn.note;
      actions.appendChild(note);
    }
    bubble.appendChild(actions);
  }

  function setAnswer(turn, res, picked, switchedFrom) {
    const d = res.decision;
    turn.answer = res.text;
    turn.model = d.served_model || d.selected_model;
    turn.error = null;
    if (!picked) {
      turn.decisionId = d.decision_id;             // the Auto decision the feedback is about
      turn.routed = turn.model;
      turn.label = autoLabel(d);
      turn.reason = d.fallback_note ? `Auto picked ${d.display_name}. ${why(d)}. ${d.fallback_note}.` : why(d);
      turn.chip = `tier ${d.tier} · ${d.tier_name}`;
      const alts = (d.alternatives || []).slice();
      turn.alternatives = alts.length ? alts : allModels().filter(m => m.model !== turn.model);
    } else {
      turn.label = `${name(turn.model)} - your choice`;
      turn.reason = switchedFrom ? `You switched from ${name(switchedFrom)}; Auto will learn from it.` : "The model you picked.";
      turn.chip = "picked";
      if (!turn.alternatives.some(a => a.model === turn.routed) && turn.routed) {
        turn.alternatives = [{model: turn.routed, display_name: name(turn.routed)}, ...turn.alternatives];
      }
    }
  }

  async function send(text) {
    const model = $("model").value;
    $("empty").hidden = true;
    const u = document.createElement("div");
    u.className = "msg user";
    u.innerHTML = `<div class="bubble"></div>`;
    u.firstChild.textContent = text;
    $("chat").appendChild(u);
    const node = document.createElement("div");
    node.className = "msg bot";
    $("chat").appendChild(node);
    const turn = {prompt: text, node, alternatives: [], pending: `${name(model)} is thinking…`, mode: model};
    state.turns.push(turn);
    render(turn);
    window.scrollTo(0, document.body.scrollHeight);
    try {
      const res = await complete(turn, model);
      turn.pending = null;
      if (model.startsWith("auto")) setAnswer(turn, res, false);
      else {                                           // a model the user picked: feedback is about its decision
        turn.routed = model;
        turn.decisionId = res.decision.decision_id;
        turn.alternatives = allModels().filter(m => m.model !== model);
        setAnswer(turn, res, true);
      }
    } catch (err) {
      turn.pending = null;
      turn.error = err.message;
    }
    render(turn);
    window.scrollTo(0, document.body.scrollHeight);
  }
  function allModels() {
    return Array.from($("model").options).filter(o => !o.value.startsWith("auto"))
      .map(o => ({model: o.value, display_name: o.textContent}));
  }

  async function feedback(turn, body, done) {
    try {
      const ack = await post("/feedback", {decision_id: turn.decisionId, user_id: user(), ...body});
      turn.note = done(ack);
      turn.noteError = false;
    } catch (err) {
      turn.note = "feedback not saved: " + err.message;
      turn.noteError = true;
    }
    render(turn);
  }
  async function override(turn, model) {
    const from = turn.model;
    turn.pending = `Regenerating with ${name(model)}…`;
    render(turn);
    try {
      const res = await complete(turn, model);
      turn.pending = null;
      setAnswer(turn, res, true, from);
    } catch (err) {
      turn.pending = null;
      turn.note = `${name(model)} failed: ${err.message}`;
      turn.noteError = true;
      render(turn);
      return;
    }
    render(turn);
    if (model !== turn.routed) {
      await feedback(turn, {event: "override", chosen_model: model}, a => `Feedback saved: switched to ${name(a.chosen_model)}`);
    } else {
      await feedback(turn, {event: "regenerate", chosen_model: model}, a => `Feedback saved: regenerated with ${name(a.chosen_model)}`);
    }
  }
  async function regenerate(turn) {
    const mode = turn.model === turn.routed ? turn.mode : turn.model;
    turn.pending = "Regenerating…";
    render(turn);
    try {
      const res = await complete(turn, mode);
      turn.pending = null;
      turn.answer = res.text;
      turn.model = res.decision.served_model || res.decision.selected_model;
    } catch (err) {
      turn.pending = null;
      turn.note = "regenerate failed: " + err.message;
      turn.noteError = true;
      render(turn);
      return;
    }
    render(turn);
    await feedback(turn, {event: "regenerate", chosen_model: turn.model},
                   a => `Feedback saved: regenerated with ${name(a.chosen_model)}`);
  }
  async function rate(turn, stars) {
    turn.rating = stars;
    render(turn);
    await feedback(turn, {event: "rating", rating: stars, chosen_model: turn.model},
                   a => `Feedback saved: ${stars}/5 for ${name(a.chosen_model)}`);
  }

  // ---------------------------------------------------------------- composer
  $("composer").onsubmit = ev => {
    ev.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    $("prompt").value = "";
    send(text);
  };
  $("prompt").addEventListener("keydown", ev => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
  });
  loadModels();
})();
