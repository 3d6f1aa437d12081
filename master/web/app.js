// corral's web UI: a page per view over the HTTP/JSON API (/v1/...), with the user's token.
// It shows what the API lets that user see; every value goes into the page as text.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const main = $("#main");
let token = sessionStorage.getItem("corral-token") || "";
let stopLive = [];  // what the current view must cancel when left (event streams, timers)

// ---- helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onsubmit" || k === "onchange") el[k] = v;
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return el;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: { "Authorization": `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const type = r.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(data.message || `${r.status}`);
  return data;
}

// server-sent events over fetch (EventSource cannot send the Authorization header)
function follow(path, onData) {
  const ctl = new AbortController();
  (async () => {
    try {
      const r = await fetch(path, { headers: { "Authorization": `Bearer ${token}` }, signal: ctl.signal });
      if (!r.ok || !r.body) return;
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const ev = /^event: (.*)$/m.exec(chunk); const data = /^data: (.*)$/m.exec(chunk);
          if (data && !ev) onData(JSON.parse(data[1]));
        }
      }
    } catch (e) { /* aborted or the master went away */ }
  })();
  stopLive.push(() => ctl.abort());
}

function every(ms, fn) { const t = setInterval(fn, ms); stopLive.push(() => clearInterval(t)); }

const state = (s) => h("span", { class: `state ${s}` }, s);
const when = (t) => t ? new Date(t).toLocaleString() : "";
const secs = (a, b) => (a && b) ? ((new Date(b) - new Date(a)) / 1000).toFixed(3) + " s" : "";
const cpu = (m) => m ? `${(Number(m) / 1000).toFixed(2)}` : "0";
const mem = (b) => { b = Number(b || 0); for (const u of ["B", "KiB", "MiB", "GiB", "TiB"]) { if (b < 1024) return `${b.toFixed(u === "B" ? 0 : 1)} ${u}`; b /= 1024; } return `${b.toFixed(1)} PiB`; };
function bar(part, whole, cls = "") {
  const pct = Math.min(100, 100 * Number(part || 0) / Number(whole || 1));
  const fill = h("span");
  fill.style.width = `${pct}%`;  // (through the CSSOM: the page's CSP allows no inline style attribute)
  return h("div", { class: `bar ${cls}`, title: `${Math.round(pct)}%` }, fill);
}
const templateState = (t) => t.suspended ? "paused" : "active";

function show(...els) {
  main.replaceChildren(...els);
}

function failed(e) {
  show(h("div", { class: "card error", id: "error" }, String(e.message || e)));
}

// ---- views --------------------------------------------------------------------------------

async function overview() {
  const st = await api("GET", "/v1/cluster");
  const nodes = (await api("GET", "/v1/nodes")).nodes || [];
  const events = h("ul", { id: "events" });
  show(
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "Masters"),
        h("table", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "address"), h("th", {}, "version"), h("th", {}, "")),
          (st.members || []).map((m) => h("tr", {}, h("td", {}, m.name), h("td", {}, m.address), h("td", {}, m.version),
            h("td", {}, st.leader && st.leader.name === m.name ? state("leader") : ""))))),
      h("div", { class: "card" }, h("h2", {}, "Tasks by state"),
        h("table", { id: "task-counts" }, Object.entries(st.tasks_by_state || {}).map(([k, v]) =>
          h("tr", { class: "link", onclick: () => go(`#/tasks?state=${k}`) }, h("td", {}, state(k)), h("td", {}, String(v)))))),
    ),
    h("div", { class: "card" }, h("h2", {}, "Nodes"), nodeTable(nodes)),
    h("div", { class: "card" }, h("h2", {}, "Recent events"), events),
  );
  follow("/v1/events", (ev) => {
    const t = ev.task || {};
    events.prepend(h("li", {}, `${new Date().toLocaleTimeString()}  ${t.task_id}  ${ev.deleted ? "deleted" : t.state}  ${t.node_id || ""}`));
    while (events.children.length > 50) events.lastChild.remove();
  });
}

function nodeTable(nodes) {
  return h("table", { id: "nodes" },
    h("tr", {}, ["node", "state", "cpu allocated", "", "memory allocated", "", "used (cpu / memory)", "tasks", ""].map((x) => h("th", {}, x))),
    nodes.map((n) => {
      const cap = n.allocatable || n.capacity || {}; const al = n.allocated || {}; const used = n.used || {};
      return h("tr", { "data-node": n.node_id },
        h("td", {}, h("a", { href: `#/tasks?node_id=${encodeURIComponent(n.node_id)}` }, n.node_id)),
        h("td", {}, state(n.state)),
        h("td", {}, `${cpu(al.cpu)} / ${cpu(cap.cpu)}`), h("td", {}, bar(al.cpu, cap.cpu)),
        h("td", {}, `${mem(al.memory)} / ${mem(cap.memory)}`), h("td", {}, bar(al.memory, cap.memory)),
        h("td", {}, bar(used.cpu, (n.capacity || {}).cpu, "used"), bar(used.memory, (n.capacity || {}).memory, "used")),
        h("td", {}, String(n.running_tasks || 0)),
        h("td", {},
          n.state === "READY" ? h("button", { class: "cordon", onclick: () => nodeAction(n.node_id, "cordon") }, "Cordon") :
            h("button", { class: "uncordon", onclick: () => nodeAction(n.node_id, "uncordon") }, "Uncordon"),
          " ", h("button", { class: "drain", onclick: () => nodeAction(n.node_id, "drain") }, "Drain")));
    }));
}

async function nodeAction(id, verb) {
  try { await api("POST", `/v1/nodes/${encodeURIComponent(id)}/${verb}`); route(); } catch (e) { alert(e.message); }
}

async function nodesView() {
  const render = async () => show(h("div", { class: "card" }, h("h2", {}, "Nodes"), nodeTable((await api("GET", "/v1/nodes")).nodes || [])));
  await render();
  every(3000, () => render().catch(failed));
}

async function tasksView(params) {
  const q = new URLSearchParams(params);
  q.set("page_size", q.get("page_size") || "50");
  const page = await api("GET", `/v1/tasks?${q}`);
  const filters = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new URLSearchParams();
    for (const k of ["state", "template_id", "node_id"]) { const v = e.target[k].value.trim(); if (v) f.set(k, v); }
    go(`#/tasks?${f}`);
  } },
    h("select", { name: "state" }, h("option", { value: "" }, "any state"),
      ["PENDING", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED", "OOM_KILLED", "TIMED_OUT", "STOPPED", "LOST", "PREEMPTED", "SKIPPED"]
        .map((s) => h("option", { value: s, selected: q.get("state") === s }, s))),
    h("input", { name: "template_id", placeholder: "template", value: q.get("template_id") || "" }),
    h("input", { name: "node_id", placeholder: "node", value: q.get("node_id") || "" }),
    h("button", { type: "submit" }, "Filter"));
  const submit = h("form", { class: "filters", id: "submit-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const t = await api("POST", "/v1/tasks", { spec: { run_script: e.target.command.value } });
      go(`#/task/${encodeURIComponent(t.task_id)}`);
    } catch (err) { $("#submit-error").textContent = err.message; }
  } },
    h("input", { name: "command", id: "submit-command", placeholder: "shell command, e.g. echo hello", size: 50 }),
    h("button", { type: "submit", class: "primary", id: "submit-button" }, "Submit task"),
    h("span", { id: "submit-error", class: "error" }));
  const rows = h("tbody", {}, (page.tasks || []).map(taskRow));
  const next = page.next_page_token ? h("button", { onclick: () => { q.set("page_token", page.next_page_token); go(`#/tasks?${q}`); } }, "Next page") : "";
  show(h("div", { class: "card" }, h("h2", {}, "Submit"), submit),
    h("div", { class: "card" }, h("h2", {}, "Tasks"), filters,
      h("table", { id: "tasks" }, h("thead", {}, h("tr", {}, ["task", "name", "state", "node", "submitted", "reason"].map((x) => h("th", {}, x)))), rows), next));
  // live: a change to a listed task updates its row
  follow(`/v1/events${q.get("template_id") ? `?template_id=${encodeURIComponent(q.get("template_id"))}` : ""}`, (ev) => {
    const t = ev.task; if (!t) return;
    const old = rows.querySelector(`tr[data-task="${CSS.escape(t.task_id)}"]`);
    if (old) old.replaceWith(taskRow(t));
  });
}

function taskRow(t) {
  return h("tr", { class: "link", "data-task": t.task_id, onclick: () => go(`#/task/${encodeURIComponent(t.task_id)}`) },
    h("td", {}, t.task_id), h("td", {}, t.name || ""), h("td", {}, state(t.state)), h("td", {}, t.node_id || ""),
    h("td", {}, when(t.submit_time)), h("td", { class: "muted" }, t.reason || ""));
}

async function taskView(id) {
  let t = await api("GET", `/v1/tasks/${encodeURIComponent(id)}`);
  const info = h("dl", { id: "task-info" });
  const logs = h("pre", { class: "logs", id: "logs" });
  const fill = () => {
    const s = t.spec || {};
    info.replaceChildren(...[
      ["task", t.task_id], ["state", state(t.state)], ["reason", t.reason || ""], ["node", t.node_id || ""], ["attempt", String(t.attempt || 1)],
      ["user", t.user_id], ["template", t.template_id || ""], ["driver", s.driver || "PROCESS"], ["image", s.image || ""],
      ["command", s.run_script || ""], ["cpu / memory", `${cpu(s.cpu_request)} cores / ${mem(s.mem_request)}`],
      ["submitted", when(t.submit_time)], ["due", when(t.due_time)], ["started", when(t.start_time)],
      ["start lateness", secs(t.due_time, t.start_time)], ["finished", when(t.finish_time)], ["exit code", t.finish_time ? String(t.exit_code || 0) : ""],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  };
  fill();
  const history = (t.history || []).map((a) => h("tr", {}, h("td", {}, a.node_id || ""), h("td", {}, state(a.state)), h("td", {}, a.reason || ""),
    h("td", {}, when(a.start_time)), h("td", {}, when(a.finish_time))));
  show(h("div", { class: "card" }, h("h2", {}, "Task"), info,
    h("p", {}, h("button", { id: "stop", onclick: () => api("POST", `/v1/tasks/${encodeURIComponent(id)}/stop`, {}).catch((e) => alert(e.message)) }, "Stop"), " ",
      h("button", { id: "retry", onclick: () => api("POST", `/v1/tasks/${encodeURIComponent(id)}/retry`, {}).then((n) => go(`#/task/${encodeURIComponent(n.task_id)}`)).catch((e) => alert(e.message)) }, "Retry"))),
  history.length ? h("div", { class: "card" }, h("h2", {}, "Earlier attempts"),
    h("table", {}, h("tr", {}, ["node", "state", "reason", "started", "finished"].map((x) => h("th", {}, x))), history)) : "",
  h("div", { class: "card" }, h("h2", {}, "Output"), logs));
  follow(`/v1/events?task_id=${encodeURIComponent(id)}`, (ev) => { if (ev.task) { t = ev.task; fill(); } });
  follow(`/v1/tasks/${encodeURIComponent(id)}/logs?follow=true`, (c) => { logs.append(c.text || ""); });
}

async function templatesView() {
  const list = (await api("GET", "/v1/templates?page_size=200")).templates || [];
  show(h("div", { class: "card" }, h("h2", {}, "Templates"),
    h("table", { id: "templates" }, h("tr", {}, ["name", "schedule", "zone", "state", "next fire", "owner"].map((x) => h("th", {}, x))),
      list.map((t) => h("tr", { class: "link", "data-template": t.template_id, onclick: () => go(`#/template/${encodeURIComponent(t.template_id)}`) },
        h("td", {}, t.name), h("td", {}, t.cron_schedule || "(run on demand)"), h("td", {}, t.time_zone || "UTC"),
        h("td", {}, state(templateState(t))), h("td", {}, when((t.next_fires || [])[0])), h("td", {}, t.owner))))));
}

async function templateView(id) {
  const t = await api("GET", `/v1/templates/${encodeURIComponent(id)}`);
  const scheduled = !!t.cron_schedule;
  const [next, hist] = scheduled ? await Promise.all([
    api("GET", `/v1/templates/${encodeURIComponent(id)}/next?count=5`).catch(() => ({})),
    api("GET", `/v1/templates/${encodeURIComponent(id)}/history?limit=50`).catch(() => ({})),
  ]) : [{}, {}];
  const act = (verb) => api("POST", `/v1/templates/${encodeURIComponent(id)}/${verb}`, {}).then(route).catch((e) => alert(e.message));
  show(h("div", { class: "card" }, h("h2", {}, `Template ${t.name}`),
    h("dl", { id: "template-info" }, ...[
      ["state", state(templateState(t))], ["schedule", t.cron_schedule || "(run on demand)"], ["zone", t.time_zone || "UTC"],
      ["command", t.run_script || ""], ["owner", t.owner], ["fired / skipped", hist.state ? `${hist.state.fired || 0} / ${hist.state.skipped || 0}` : ""],
      ["last skip reason", (hist.state || {}).last_skip_reason || ""],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("p", {},
      scheduled ? (t.suspended ? h("button", { id: "resume", onclick: () => act("resume") }, "Resume") : h("button", { id: "pause", onclick: () => act("pause") }, "Pause")) : "", " ",
      h("button", { id: "run-now", class: "primary", onclick: () => api("POST", "/v1/tasks", { template_id: id }).then((n) => go(`#/task/${encodeURIComponent(n.task_id)}`)).catch((e) => alert(e.message)) }, "Run now"))),
  scheduled ? h("div", { class: "card" }, h("h2", {}, "Next fires"),
    h("ul", {}, (next.local || []).map((l, i) => h("li", {}, `${l}  (${(next.utc || [])[i] || ""} UTC)`)))) : "",
  scheduled ? h("div", { class: "card" }, h("h2", {}, "History"),
    h("table", {}, h("tr", {}, ["task", "state", "due", "started", "how late", "reason"].map((x) => h("th", {}, x))),
      (hist.runs || []).map((r) => h("tr", { class: "link", onclick: () => go(`#/task/${encodeURIComponent(r.task_id)}`) },
        h("td", {}, r.task_id), h("td", {}, state(r.state)), h("td", {}, when(r.due_time)), h("td", {}, when(r.start_time)),
        h("td", {}, secs(r.due_time, r.start_time)), h("td", { class: "muted" }, r.reason || ""))))) : "");
}

// ---- routing and login --------------------------------------------------------------------

function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }

async function route() {
  stopLive.forEach((f) => f()); stopLive = [];
  if (!token) { showLogin(); return; }
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${path}`);
  try {
    if (path === "/" || path === "") await overview();
    else if (path === "/tasks") await tasksView(query || "");
    else if (path.startsWith("/task/")) await taskView(decodeURIComponent(path.slice(6)));
    else if (path === "/templates") await templatesView();
    else if (path.startsWith("/template/")) await templateView(decodeURIComponent(path.slice(10)));
    else if (path === "/nodes") await nodesView();
    else show(h("div", { class: "card" }, "No such page."));
  } catch (e) {
    if (/token|UNAUTHENTICATED|401/.test(e.message)) { logout(e.message); return; }
    failed(e);
  }
}

function showLogin(message = "") {
  $("#nav").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
  show(loginForm);
  $("#login-error").textContent = message;
}

function logout(message = "") {
  token = ""; sessionStorage.removeItem("corral-token"); showLogin(message);
}

const loginForm = $("#login");
loginForm.onsubmit = async (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  try {
    await api("GET", "/v1/cluster");
  } catch (err) { token = ""; $("#login-error").textContent = err.message; return; }
  sessionStorage.setItem("corral-token", token);
  $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = "logged in";
  route();
};
$("#logout").onclick = () => logout();
window.addEventListener("hashchange", route);
if (token) { $("#nav").hidden = false; $("#logout").hidden = false; $("#who").textContent = "logged in"; }
route();
