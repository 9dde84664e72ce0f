// bottle console: the page's script. Every piece of text that comes from a run (host, path,
// rule, the agent's request, its reasons) is set with textContent or as a text node, never
// parsed as HTML; control and bidi characters are shown as visible escapes.
"use strict";

const CSRF = document.querySelector('meta[name="bottle-csrf"]').content;
// C0/C1 controls (but tab and newline), bidi embeddings, overrides, isolates and marks, line
// and paragraph separators, the BOM.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;
const MAX_AUDIT_ROWS = 2000;

let runs = [];
let chosen = decodeURIComponent(location.hash.slice(1)) || null;
let source = null;
const cards = new Map();

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) put(e, String(text));
  return e;
}

// Sets `s` as the text of `e`; control and bidi characters become visible `\u{...}` marks.
function put(e, s) {
  e.textContent = "";
  let last = 0;
  for (const m of s.matchAll(CONTROLS)) {
    if (m.index > last) e.appendChild(document.createTextNode(s.slice(last, m.index)));
    const code = m[0].codePointAt(0).toString(16).padStart(4, "0");
    const mark = document.createElement("span");
    mark.className = "esc";
    mark.textContent = "\\u{" + code + "}";
    e.appendChild(mark);
    last = m.index + m[0].length;
  }
  if (last === 0) e.textContent = s;
  else if (last < s.length) e.appendChild(document.createTextNode(s.slice(last)));
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(el("td", null, c));
  return tr;
}

function age(secs) {
  const s = Math.max(0, Math.floor(Date.now() / 1000 - secs));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function time(ms) {
  return new Date(ms).toISOString().slice(11, 23);
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function drawRuns() {
  const body = document.querySelector("#runs tbody");
  body.textContent = "";
  for (const r of runs) {
    const tr = row([
      r.name ?? "-",
      r.run_id,
      r.hash ? r.hash.slice(0, 12) : "-",
      r.started ? age(r.started) : (r.ended ? "ended " + age(r.ended) + " ago" : "-"),
      r.state,
      r.pending ?? "-",
    ]);
    tr.dataset.run = r.run_id;
    if (r.run_id === chosen) tr.classList.add("chosen");
    if (r.pending) tr.classList.add("waiting");
    tr.addEventListener("click", () => choose(r.run_id));
    body.appendChild(tr);
  }
  document.getElementById("no-runs").hidden = runs.length > 0;
}

function choose(run) {
  if (run === chosen && source) return;
  chosen = run;
  history.replaceState(null, "", "#" + encodeURIComponent(run));
  connect();
  drawRuns();
}

function say(text) {
  put(document.getElementById("message"), text);
}

async function reply(run, id, body) {
  say("");
  let res;
  try {
    res = await fetch("/api/runs/" + encodeURIComponent(run) + "/requests/" + encodeURIComponent(id), {
      method: "POST",
      headers: { "content-type": "application/json", "x-bottle-csrf": CSRF },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    say("the console did not answer: " + e);
    return;
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) say(data.error ?? ("refused: " + res.status));
  else say(data.id + " " + data.status);
}

function card(run, r) {
  const c = el("div", "request");
  c.dataset.request = r.id;
  const head = el("div", "head");
  head.appendChild(el("strong", null, r.kind));
  head.appendChild(document.createTextNode(" · " + r.id + " · filed "));
  const filed = el("span", "filed", age(r.time_ms / 1000) + " ago");
  filed.dataset.ms = r.time_ms;
  head.appendChild(filed);
  c.appendChild(head);
  let what;
  if (r.kind === "allow_host") what = r.host;
  else if (r.kind === "allow_dlp") what = r.rule + ": " + r.value;
  else what = r.text;
  c.appendChild(el("div", "what", what));
  c.appendChild(el("div", "means", r.means));
  if (r.why) c.appendChild(el("div", "why", "why: " + r.why));
  const actions = el("div", "actions");
  if (r.grant) {
    const approve = el("button", "approve", "Approve");
    approve.addEventListener("click", () => reply(run, r.id, { action: "approve" }));
    actions.appendChild(approve);
  } else {
    const text = el("textarea", "answer-text");
    text.rows = 2;
    text.placeholder = "your answer";
    const answer = el("button", "answer", "Answer");
    answer.addEventListener("click", () => reply(run, r.id, { action: "answer", text: text.value }));
    actions.appendChild(text);
    actions.appendChild(answer);
  }
  const reason = el("input", "reason");
  reason.placeholder = "reason (for the agent)";
  const deny = el("button", "deny", "Deny");
  deny.addEventListener("click", () => reply(run, r.id, { action: "deny", reason: reason.value }));
  actions.appendChild(reason);
  actions.appendChild(deny);
  c.appendChild(actions);
  return c;
}

function drawRequests(run, rows) {
  const pending = rows.filter((r) => r.status === "pending");
  const box = document.getElementById("pending");
  const ids = new Set(pending.map((r) => r.id));
  for (const [id, c] of cards) {
    if (!ids.has(id)) { c.remove(); cards.delete(id); }
  }
  for (const r of pending) {
    if (!cards.has(r.id)) {
      const c = card(run, r);
      cards.set(r.id, c);
      box.appendChild(c);
    }
  }
  document.getElementById("no-pending").hidden = pending.length > 0;
  put(document.getElementById("pending-count"), pending.length ? "(" + pending.length + ")" : "");
  const done = document.querySelector("#answered tbody");
  done.textContent = "";
  for (const r of rows.filter((r) => r.status !== "pending").reverse()) {
    const what = r.kind === "allow_host" ? r.host : r.kind === "allow_dlp" ? r.rule + ": " + r.value : r.text;
    const tr = row([r.id, r.kind, what, r.status, r.answer ?? r.reason ?? ""]);
    tr.dataset.request = r.id;
    done.appendChild(tr);
  }
}

function short(oid) {
  return /^0+$/.test(oid) ? "(none)" : oid.slice(0, 12);
}

function addAudit(events) {
  const body = document.querySelector("#audit tbody");
  const pushes = document.querySelector("#pushes tbody");
  const filter = document.getElementById("filter").value;
  for (const e of events) {
    if (e.git) {
      const tr = row([time(e.time_ms), e.git.upstream, e.git.ref_name,
        short(e.git.old) + " → " + short(e.git.new), e.decision, e.rule ?? "-"]);
      tr.className = "d-" + e.decision;
      pushes.insertBefore(tr, pushes.firstChild);
    }
    const tr = row([time(e.time_ms), e.method, e.host + (e.port ? ":" + e.port : ""), e.path,
      e.decision, e.rule ?? "-", e.status, bytes(e.bytes_out), bytes(e.bytes_in)]);
    tr.dataset.decision = e.decision;
    tr.className = "d-" + e.decision;
    if (filter && e.decision !== filter) tr.classList.add("hidden");
    body.insertBefore(tr, body.firstChild);
  }
  while (body.rows.length > MAX_AUDIT_ROWS) body.deleteRow(body.rows.length - 1);
}

function refilter() {
  const filter = document.getElementById("filter").value;
  for (const tr of document.querySelectorAll("#audit tbody tr")) {
    tr.classList.toggle("hidden", filter !== "" && tr.dataset.decision !== filter);
  }
}

function clearRun() {
  for (const sel of ["#audit tbody", "#pushes tbody", "#answered tbody", "#pending"]) {
    document.querySelector(sel).textContent = "";
  }
  cards.clear();
  put(document.getElementById("run-title"), chosen ?? "(none chosen)");
}

function connect() {
  if (source) source.close();
  const link = document.getElementById("link");
  source = new EventSource("/api/events" + (chosen ? "?run=" + encodeURIComponent(chosen) : ""));
  source.addEventListener("open", () => { link.textContent = "live"; link.classList.remove("down"); });
  source.addEventListener("error", () => { link.textContent = "reconnecting…"; link.classList.add("down"); });
  source.addEventListener("reset", () => clearRun());
  source.addEventListener("runs", (m) => {
    runs = JSON.parse(m.data);
    if (!chosen) {
      const first = runs.find((r) => r.state === "up") ?? runs[0];
      if (first) { choose(first.run_id); return; }
    }
    drawRuns();
  });
  source.addEventListener("requests", (m) => drawRequests(chosen, JSON.parse(m.data)));
  source.addEventListener("audit", (m) => addAudit(JSON.parse(m.data)));
}

document.getElementById("filter").addEventListener("change", refilter);
setInterval(() => {
  drawRuns();
  for (const f of document.querySelectorAll(".request .filed")) f.textContent = age(Number(f.dataset.ms) / 1000) + " ago";
}, 1000);
connect();
