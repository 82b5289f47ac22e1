// The console's front end: plain JavaScript, no build step, nothing fetched but this origin's JSON API.
// Every value goes into the page with textContent or an attribute set through the DOM, never as HTML;
// the only markup inserted is the DAG and timing SVGs the server draws, which escape every name.
"use strict";

const POLL_MS = 1000;
const FINAL = new Set(["Succeeded", "Failed", "Cancelled"]);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// GET a JSON document; with `etags`, an unchanged one (304) resolves to null.
const etags = new Map();
async function api(url, { conditional = false } = {}) {
  const headers = {};
  if (conditional && etags.has(url)) headers["If-None-Match"] = etags.get(url).etag;
  const r = await fetch(url, { headers, cache: "no-store" });
  if (r.status === 304) return null;
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  const etag = r.headers.get("ETag");
  if (etag) etags.set(url, { etag });
  return body;
}

// POST an action with the session's CSRF token (the page's meta tag) and, when the console asks for one,
// its actions token (typed once into #actions-token, then kept in this tab's sessionStorage, never in a
// cookie or the URL; a 401 forgets it). The answer's `error` is thrown.
const TOKEN_KEY = "conveyor-actions-token";
async function act(url) {
  const token = document.querySelector('meta[name="conveyor-csrf"]')?.content || "";
  const headers = { "X-Conveyor-CSRF": token };
  if (await actionsTokenRequired()) {
    const field = document.getElementById("actions-token");
    const bearer = (field ? field.value.trim() : "") || sessionStorage.getItem(TOKEN_KEY) || "";
    if (!bearer) throw new Error("enter the console's actions token first");
    headers.Authorization = `Bearer ${bearer}`;
    sessionStorage.setItem(TOKEN_KEY, bearer);
  }
  const r = await fetch(url, { method: "POST", headers, cache: "no-store", credentials: "same-origin" });
  if (r.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}
let source = null;  // GET /api/source, asked once: whether this console takes actions, and needs a token
function sourceInfo() {
  if (source === null) source = api("/api/source").catch(() => ({}));
  return source;
}
async function actionsEnabled() { return Boolean((await sourceInfo()).actions); }
async function actionsTokenRequired() { return Boolean((await sourceInfo()).actionsToken); }

function runHref(id) { return "/runs/" + encodeURIComponent(id); }
function runApi(id) { return "/api/runs/" + encodeURIComponent(id); }
function lineageHref(digest) { return "/lineage/" + encodeURIComponent(digest); }
function pipelineHref(name) { return "/pipelines/" + encodeURIComponent(name); }

// A digest as code, linked to its lineage (a fan-in collection's digest too: its page says what made it).
function digestLink(digest, label) {
  if (!digest) return h("code", { class: "digest" }, "(no digest)");
  return h("a", { class: "lineage-link", href: lineageHref(digest), title: `lineage of ${digest}` },
    h("code", { class: "digest" }, label || digest));
}
function shortDigest(d) { return d ? d.slice(0, "sha256:".length + 12) : "-"; }

function fmtTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function fmtSeconds(s) {
  if (s === null || s === undefined) return "-";
  return s < 120 ? `${Number(s).toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]} (${n} B)`;
}
function fmtValue(v) { return typeof v === "string" ? v : JSON.stringify(v); }
function fmtMetric(v) { return typeof v === "number" ? Number(v.toPrecision(6)).toString() : fmtValue(v); }

function phase(p) { return h("span", { class: `phase phase-${String(p || "").replace(/[^A-Za-z]/g, "")}` }, p || "-"); }

// Replace `el`'s children; nulls dropped and arrays flattened, as in h().
function mount(el, ...children) { el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)); }

// A two-column table of facts, without a header row.
function facts(cls, rows) {
  return h("table", { class: `facts ${cls}` }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))));
}

function table(cls, header, rows) {
  return h("table", { class: cls },
    h("thead", {}, h("tr", {}, header.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

function fail(app, e) { app.replaceChildren(h("p", { class: "error", role: "alert" }, String(e.message || e))); }

// Call `fn` every POLL_MS while the tab is visible, one call at a time; a failing call says so in the header.
function pollEvery(fn) {
  let busy = false;
  const status = document.getElementById("status");
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await fn();
      status.textContent = "";
    } catch (e) {
      status.textContent = `not updating: ${e.message || e}; retrying`;
    } finally { busy = false; }
  };
  return setInterval(tick, POLL_MS);
}

// ------------------------------------------------------------------ the runs list

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fromLocalInput(v) { return v ? new Date(v).toISOString() : ""; }

async function runsPage(app) {
  const params = new URLSearchParams(location.search);
  const state = {
    pipeline: params.get("pipeline") || "", phase: params.get("phase") || "",
    namespace: params.get("namespace") || "", label: params.getAll("label"),
    since: params.get("since") || "", until: params.get("until") || "",
    page: Number(params.get("page") || 1), per: params.get("per") || "",
  };
  const selected = new Set();
  const pipelineSel = h("select", { id: "filter-pipeline", name: "pipeline" });
  const phaseSel = h("select", { id: "filter-phase", name: "phase" });
  const namespaceSel = h("select", { id: "filter-namespace", name: "namespace" });  // a cluster's runs only
  const namespaceLabel = h("label", { for: "filter-namespace" }, "Namespace");
  const since = h("input", { id: "filter-since", type: "datetime-local", step: "1", value: toLocalInput(state.since) });
  const until = h("input", { id: "filter-until", type: "datetime-local", step: "1", value: toLocalInput(state.until) });
  const body = h("tbody", {});
  const count = h("p", { id: "run-count", class: "count" });
  const pageInfo = h("span", { id: "page-info" });
  const newer = h("button", { type: "button", id: "page-newer" }, "← Newer");
  const older = h("button", { type: "button", id: "page-older" }, "Older →");
  const compare = h("a", { id: "compare-selected", class: "button disabled", href: "#", "aria-disabled": "true" }, "Compare selected");
  let last = null;

  function query() {
    const q = new URLSearchParams();
    for (const k of ["pipeline", "phase", "namespace", "since", "until", "per"]) if (state[k]) q.set(k, state[k]);
    for (const l of state.label) q.append("label", l);
    if (state.page > 1) q.set("page", String(state.page));
    return q.toString();
  }
  function updateCompare() {
    const ids = [...selected];
    const ok = ids.length >= 2;
    compare.classList.toggle("disabled", !ok);
    compare.setAttribute("aria-disabled", String(!ok));
    compare.href = ok ? "/compare?" + ids.map((id) => "run=" + encodeURIComponent(id)).join("&") : "#";
    compare.textContent = `Compare selected (${ids.length})`;
  }
  function options(select, values, current, allLabel) {
    const want = [allLabel, ...values];
    const have = [...select.options].map((o) => o.textContent);
    if (JSON.stringify(want) !== JSON.stringify(have)) {
      select.replaceChildren(h("option", { value: "" }, allLabel), ...values.map((v) => h("option", { value: v }, v)));
    }
    select.value = current;
  }
  function render(doc) {
    options(pipelineSel, doc.pipelines, state.pipeline, "all pipelines");
    options(phaseSel, doc.phases, state.phase, "all phases");
    const clustered = (doc.namespaces || []).length > 0 || Boolean(state.namespace);
    namespaceSel.hidden = namespaceLabel.hidden = !clustered;
    if (clustered) options(namespaceSel, doc.namespaces, state.namespace, "all namespaces");
    body.replaceChildren(...doc.runs.map((r) => h("tr", { class: "run", dataset: { run: r.id, phase: r.phase } },
      h("td", {}, h("input", {
        type: "checkbox", class: "select", "aria-label": `select ${r.id} to compare`, checked: selected.has(r.id),
        onchange: (e) => { if (e.target.checked) selected.add(r.id); else selected.delete(r.id); updateCompare(); },
      })),
      h("td", { class: "run-id" }, h("a", { href: runHref(r.id) }, r.id)),
      h("td", { class: "pipeline" }, r.pipeline || "-"),
      h("td", {}, phase(r.phase)),
      h("td", { class: "progress" }, r.progress),
      h("td", { class: "started" }, fmtTime(r.startedAt)),
      h("td", { class: "duration" }, fmtSeconds(r.seconds)))));
    if (!doc.runs.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: "7" }, "No runs match.")));
    count.textContent = `${doc.total} run${doc.total === 1 ? "" : "s"}`;
    pageInfo.textContent = `page ${doc.page} of ${doc.pages}`;
    newer.disabled = doc.page <= 1;
    older.disabled = doc.page >= doc.pages;
  }
  let latest = 0;
  async function load(conditional) {
    const seq = ++latest;  // answers can arrive out of order: only the newest request's is shown
    const url = "/api/runs?" + query();
    const doc = await api(url, { conditional });
    if (doc && seq === latest) { last = doc; render(doc); }
  }
  function changed() {
    state.page = 1;
    history.replaceState(null, "", "/" + (query() ? "?" + query() : ""));
    load(false).catch((e) => fail(app, e));
  }
  pipelineSel.addEventListener("change", () => { state.pipeline = pipelineSel.value; changed(); });
  phaseSel.addEventListener("change", () => { state.phase = phaseSel.value; changed(); });
  namespaceSel.addEventListener("change", () => { state.namespace = namespaceSel.value; changed(); });
  since.addEventListener("change", () => { state.since = fromLocalInput(since.value); changed(); });
  until.addEventListener("change", () => { state.until = fromLocalInput(until.value); changed(); });
  newer.addEventListener("click", () => { state.page = Math.max(1, state.page - 1); history.replaceState(null, "", "/?" + query()); load(false); });
  older.addEventListener("click", () => { state.page += 1; history.replaceState(null, "", "/?" + query()); load(false); });

  document.title = "Runs · Conveyor";
  mount(app,
    h("h1", {}, "Runs"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "filter-pipeline" }, "Pipeline"), pipelineSel,
      h("label", { for: "filter-phase" }, "Phase"), phaseSel,
      namespaceLabel, namespaceSel,
      h("label", { for: "filter-since" }, "Started after"), since,
      h("label", { for: "filter-until" }, "Started before"), until),
    h("div", { class: "toolbar" }, count, compare),
    h("table", { id: "runs", class: "runs" },
      h("thead", {}, h("tr", {}, ["", "Run", "Pipeline", "Phase", "Steps", "Started", "Duration"].map(
        (c, i) => h("th", { scope: "col" }, i === 0 ? h("span", { class: "visually-hidden" }, "Select") : c)))),
      body),
    h("nav", { class: "pager", "aria-label": "pages" }, newer, pageInfo, older));
  updateCompare();
  try { await load(false); } catch (e) { fail(app, e); return; }
  pollEvery(() => load(true));
  return last;
}

// ------------------------------------------------------------------ one run

function keyValues(cls, obj, fmt = fmtValue) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "none" }, "none");
  return table(cls, ["name", "value"], entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, fmt(v)]));
}

// One attempt's log, fetched when opened. `logs` outlives re-renders: which logs are open, their last
// text, and how to refresh each (a running run's page refreshes its open logs on every poll).
function logBlock(runId, key, attempt, logs) {
  const id = `${key}#${attempt}`;
  const url = `${runApi(runId)}/logs/${encodeURIComponent(key)}/${attempt}`;
  const pre = h("pre", { class: "log-text", dataset: { key, attempt: String(attempt) } });
  const box = h("details", { class: "log", dataset: { key, attempt: String(attempt) } },
    h("summary", {}, `log: ${key}, attempt ${attempt}`), pre);
  function show() {
    const text = logs.texts.get(id);
    pre.textContent = text === undefined ? "" : text === null ? "(no archived log yet: still running, or it could not be stored)" : text;
  }
  async function fill() {
    try {
      const doc = await api(url, { conditional: logs.texts.has(id) });  // unchanged: 304, keep the text
      if (doc) logs.texts.set(id, doc.text);
      show();
    } catch (e) { pre.textContent = `(could not read the log: ${e.message})`; }
  }
  logs.fills.set(id, fill);
  show();
  box.addEventListener("toggle", () => {
    if (box.open) { logs.open.add(id); fill(); } else logs.open.delete(id);
  });
  if (logs.open.has(id)) box.open = true;  // fires "toggle", which refreshes it
  return box;
}

function stepBlock(run, s, openSteps, logs) {
  const notes = [s.cacheHit ? "cache hit" : "", s.fanOutText, s.attempts ? `${s.attempts} attempt${s.attempts === 1 ? "" : "s"}` : ""].filter(Boolean);
  const block = h("details", { class: "step", id: `step-${s.name}`, dataset: { step: s.name, phase: s.phase } },
    h("summary", {}, h("span", { class: "step-name" }, s.name), " ", phase(s.phase), notes.length ? h("span", { class: "notes" }, " " + notes.join(" · ")) : null),
    facts("step-facts", [
      ["what", s.component ? `component ${s.component}` : `image ${s.image || "-"}`],
      ["started", fmtTime(s.startedAt)], ["finished", fmtTime(s.finishedAt)], ["duration", fmtSeconds(s.seconds)],
      ["cache", s.cacheHit ? "hit: outputs reused, nothing ran" : "miss"], ["cache key", s.cacheKey || "-"],
    ]),
    s.message ? h("pre", { class: "message" }, s.message) : null,
    s.attemptList.length ? [h("h3", {}, "Attempts"), table("attempts", ["attempt", "started", "finished", "outcome", "message"],
      s.attemptList.map((a) => [String(a.attempt), fmtTime(a.startedAt), fmtTime(a.finishedAt), a.outcome, a.message || ""]))] : null,
    h("h3", {}, "Inputs"),
    s.inputs.length ? table("inputs", ["input", "from", "digest"], s.inputs.map((i) => [i.name, i.from || "-", digestLink(i.digest)])) : h("p", { class: "none" }, "none"),
    h("h3", {}, "Outputs"),
    s.outputs.length ? table("outputs", ["output", "digest (lineage)", "size", "uri"], s.outputs.map((o) => [o.name, digestLink(o.digest), fmtBytes(o.size), h("span", { class: "uri" }, o.uri || "-")])) : h("p", { class: "none" }, "none"),
    h("h3", {}, "Metrics"), keyValues("metrics", s.metrics, fmtMetric),
    Object.keys(s.parameters).length ? [h("h3", {}, "Parameters used"), keyValues("step-params", s.parameters)] : null,
    s.items.length ? [h("h3", {}, `Items (${s.items.length})`), table("items", ["item", "phase", "attempts", "duration", "cache", "message"],
      s.items.map((i) => [i.key, phase(i.phase), String(i.attempts), fmtSeconds(i.seconds), i.cacheHit ? "hit" : "", i.message || ""]))] : null,
    h("h3", {}, "Logs"),
    s.logs.length ? h("div", { class: "logs" }, s.logs.map((l) => logBlock(run.id, l.key, l.attempt, logs)))
      : h("p", { class: "none" }, s.cacheHit ? "a cache hit: nothing ran, so there is no log" : "no archived log"));
  block.addEventListener("toggle", () => { if (block.open) openSteps.add(s.name); else openSteps.delete(s.name); });
  if (openSteps.has(s.name)) block.open = true;
  return block;
}

async function runPage(app) {
  const runId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const url = runApi(runId);
  const openSteps = new Set(), logs = { open: new Set(), texts: new Map(), fills: new Map() };
  function render(run) {
    document.title = `${run.id} · Conveyor`;
    const svg = (cls, markup) => { const d = h("div", { class: cls }); d.innerHTML = markup; return d; };
    const dag = svg("dag", run.dag);
    dag.addEventListener("click", (e) => {
      const node = e.target.closest("g.node");
      if (!node) return;
      const block = document.getElementById(`step-${node.dataset.id}`);
      if (block) { block.open = true; block.scrollIntoView({ block: "start" }); }
    });
    mount(app,
      h("h1", {}, "Run ", h("span", { id: "run-id" }, run.id), " ", phase(run.phase)),
      actions ? actionBar(run) : null,
      run.live ? h("p", { class: "live" }, "Running: this page follows it live; the full record appears when the run ends.") : null,
      run.problem ? h("p", { class: "error", role: "alert" }, run.problem) : null,
      run.failure ? h("section", { id: "failure", class: "failure", "aria-labelledby": "failure-title" },
        h("h2", { id: "failure-title" }, "Why it failed"),
        h("p", {}, h("strong", {}, run.failure.reason || "Failed"), ": ", run.failure.message),
        run.failure.steps.map((f) => [h("h3", {}, f.step), h("pre", { class: "message" }, f.message)])) : null,
      h("section", { id: "summary" }, facts("summary", [
        ["pipeline", run.pipeline ? h("a", { href: pipelineHref(run.pipeline) }, run.pipeline) : "-"], ["phase", run.phase], ["started", fmtTime(run.startedAt)],
        ["finished", fmtTime(run.finishedAt)], ["duration", fmtSeconds(run.seconds)],
        ["pipeline spec", run.pipelineSpecDigest || "-"], ["code version", run.codeVersion ? `conveyor ${run.codeVersion}` : "-"],
      ])),
      (run.conditions || []).length ? [h("h2", {}, "Conditions"), table("conditions", ["type", "status", "reason", "message"],
        run.conditions.map((c) => [c.type, c.status, c.reason || "-", c.message || "-"]))] : null,
      h("h2", {}, "Parameters"), keyValues("parameters", run.parameters),
      h("h2", {}, "Pipeline"), run.dag ? dag : h("p", { class: "none" }, "no step has started yet"),
      h("h2", {}, "Timings"), run.timing ? svg("timing", run.timing) : h("p", { class: "none" }, "-"),
      h("h2", {}, "Steps"), h("div", { id: "steps" }, run.steps.map((s) => stepBlock(run, s, openSteps, logs))),
      run.plots.length ? [h("h2", {}, "Evaluation plots"), h("div", { class: "plots" }, run.plots.map((p) =>
        h("figure", {}, h("img", { src: `${url}/plots/${encodeURIComponent(p.step)}/${p.index}`, alt: `${p.step}: ${p.title}` }),
          h("figcaption", {}, `${p.step}: ${p.title}`))))] : null,
      Object.keys(run.environment || {}).length ? [h("h2", {}, "Environment"), keyValues("environment", run.environment)] : null);
  }
  const actions = await actionsEnabled();
  const needsToken = actions && await actionsTokenRequired();
  const result = h("p", { id: "action-result", role: "status" });
  // The buttons of what may be done to the run now: cancel while it goes, rerun once it ended, and a
  // decision on each step waiting for approval. The answer (or why it was refused) shows in #action-result.
  function actionBar(r) {
    const button = (cls, label, path, confirmText) => h("button", { type: "button", class: `action ${cls}`, onclick: async (e) => {
      if (confirmText && !window.confirm(confirmText)) return;
      e.target.disabled = true;
      try {
        const done = await act(`${url}/${path}`);
        mount(result, done.message, done.created ? [" ", h("a", { href: runHref(done.created), id: "created-run" }, "open it")] : null);
        result.className = "done";
        etags.delete(url);
        const next = await api(url);
        if (next) render(next);
      } catch (err) { result.textContent = String(err.message || err); result.className = "error"; }
      finally { e.target.disabled = false; }
    } }, label);
    const waiting = r.steps.filter((s) => s.phase === "Waiting" && /approval/.test(s.message || ""));
    const entry = needsToken
      ? h("label", { id: "actions-token-entry", class: "token" }, "Actions token (kept for this tab): ",
        h("input", { type: "password", id: "actions-token", autocomplete: "off",
          placeholder: sessionStorage.getItem(TOKEN_KEY) ? "(given)" : "" }), " ")
      : null;
    return h("section", { id: "actions", class: "actions", "aria-label": "actions" }, entry,
      !r.final ? button("cancel", "Cancel run", "cancel") : null,
      r.final && !r.live ? button("rerun", "Rerun (same spec and parameters, no cache)", "rerun") : null,
      waiting.map((s) => h("span", { class: "decision", dataset: { step: s.name } }, `Step ${s.name} waits for approval: `,
        button("approve", `Approve ${s.name}`, `steps/${encodeURIComponent(s.name)}/approve`),
        " ", button("reject", `Reject ${s.name}`, `steps/${encodeURIComponent(s.name)}/reject`))),
      result);
  }
  let run;
  try { run = await api(url); } catch (e) { fail(app, e); return; }
  render(run);
  if (run.final) return;
  const timer = pollEvery(async () => {
    const next = await api(url, { conditional: true });
    if (next) render(next);
    else await Promise.all([...logs.open].map((id) => logs.fills.get(id)?.()));  // a running step's log grows
    if (next && next.final) clearInterval(timer);
  });
}

// ------------------------------------------------------------------ compare

async function comparePage(app) {
  const ids = new URLSearchParams(location.search).getAll("run");
  document.title = "Compare · Conveyor";
  if (ids.length < 2) {
    app.replaceChildren(h("h1", {}, "Compare"), h("p", {}, "Choose two or more runs on the ", h("a", { href: "/" }, "runs list"), " to compare them."));
    return;
  }
  let doc;
  try { doc = await api("/api/compare?" + ids.map((id) => "run=" + encodeURIComponent(id)).join("&")); } catch (e) { fail(app, e); return; }
  const only = h("input", { type: "checkbox", id: "only-differences" });
  const tbl = h("table", { id: "comparison", class: "comparison" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "differs")), h("th", { scope: "col" }, "section"), h("th", { scope: "col" }, "name"),
      doc.runs.map((r) => h("th", { scope: "col" }, h("a", { href: runHref(r.id) }, r.id))))),
    h("tbody", {}, doc.rows.map((row) => h("tr", { class: row.differs ? "row differs" : "row", dataset: { section: row.section, name: row.name } },
      h("td", { class: "marker", title: row.differs ? "differs" : "" }, row.differs ? "≠" : ""),
      h("td", {}, row.section), h("th", { scope: "row" }, row.name),
      row.values.map((v) => h("td", { class: "value" }, v))))));
  only.addEventListener("change", () => tbl.classList.toggle("only-differences", only.checked));
  mount(app,
    h("h1", {}, `Compare ${doc.runs.length} runs`),
    h("p", { id: "differing" }, `${doc.differing} of ${doc.rows.length} rows differ (marked ≠)`),
    h("p", {}, only, " ", h("label", { for: "only-differences" }, "show only differences")),
    tbl);
}

// ------------------------------------------------------------------ lineage

function lineageForm() {
  const input = h("input", { id: "lineage-digest", name: "digest", type: "text", size: "72", spellcheck: "false", placeholder: "sha256:…" });
  return h("form", { class: "filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    if (input.value.trim()) location.assign(lineageHref(input.value.trim()));
  } }, h("label", { for: "lineage-digest" }, "Artifact digest (or a prefix)"), input, h("button", { type: "submit" }, "Show lineage"));
}

async function modelsPage(app) {
  document.title = "Lineage · Conveyor";
  let doc;
  try { doc = await api("/api/lineage"); } catch (e) { fail(app, e); return; }
  mount(app,
    h("h1", {}, "Lineage"),
    h("p", {}, "Where a model came from: pick one, or give any artifact's digest, to follow it back through the steps that made it to the data."),
    lineageForm(),
    h("h2", {}, `Models (${doc.total})`),
    doc.models.length ? table("models", ["model", "made by run", "step", "pipeline", "started", "runs using it"], doc.models.map((m) => [
      digestLink(m.digest, shortDigest(m.digest)), h("a", { href: runHref(m.run) }, m.run), m.step,
      m.pipeline ? h("a", { href: pipelineHref(m.pipeline) }, m.pipeline) : "-", fmtTime(m.startedAt), String(m.runs)]))
      : h("p", { class: "none" }, "No recorded run has a model output yet."));
}

function problemCell(p) { return p ? h("span", { class: "problem" }, p) : "ok"; }

function hopBlock(doc, hop) {
  const notes = [hop.component ? `component ${hop.component}` : hop.image ? `image ${hop.image}` : "",
    hop.source ? "where the data enters" : ""].filter(Boolean);
  return h("li", { class: "hop", dataset: { step: hop.step, run: hop.run } },
    h("h3", {}, h("span", { class: "step-name" }, hop.step), " ", phase(hop.phase), notes.length ? h("span", { class: "notes" }, " " + notes.join(" · ")) : null),
    h("p", { class: "made-in" }, hop.cacheHit
      ? (hop.computedIn ? ["a cache hit in ", h("a", { href: runHref(hop.run) }, hop.run), ": computed by run ", h("a", { class: "computed-in", href: runHref(hop.computedIn) }, hop.computedIn)]
        : ["a cache hit in ", h("a", { href: runHref(hop.run) }, hop.run)])
      : ["ran in ", h("a", { href: runHref(hop.run) }, hop.run)]),
    hop.inputs.length ? table("inputs", ["input", "from", "digest", "stored"], hop.inputs.map((i) => [i.name, i.from || "-", digestLink(i.digest), problemCell(i.problem)])) : null,
    table("outputs", ["output", "digest", "size", "stored"], hop.outputs.map((o) => [
      o.digest === doc.digest ? h("strong", {}, `${o.name} (this artifact)`) : o.name,
      o.digest === doc.digest ? h("code", { class: "digest" }, o.digest) : digestLink(o.digest), fmtBytes(o.size), problemCell(o.problem)])),
    hop.settings && Object.keys(hop.settings).length ? [h("h4", {}, "Settings (with)"), keyValues("step-settings", hop.settings)] : null,
    Object.keys(hop.parameters).length ? [h("h4", {}, "Parameters used"), keyValues("step-params", hop.parameters)] : null);
}

async function lineagePage(app) {
  const digest = decodeURIComponent(location.pathname.split("/")[2] || "");
  if (!digest) return modelsPage(app);
  document.title = `Lineage of ${shortDigest(digest)} · Conveyor`;
  let doc;
  try { doc = await api("/api/lineage/" + encodeURIComponent(digest)); } catch (e) {
    mount(app, h("h1", {}, "Lineage"), h("p", { class: "error", role: "alert" }, String(e.message || e)), lineageForm());
    return;
  }
  // wide: it scrolls, so it takes the keyboard's focus (arrow keys scroll it) and says what it is
  const svg = h("div", { class: "dag lineage-graph", tabindex: "0", role: "region", "aria-label": "lineage drawing" });
  svg.innerHTML = doc.graph;  // drawn by the server, every name escaped (cli/graph.py)
  const m = doc.madeBy;
  const problems = Object.entries(doc.problems);
  mount(app,
    h("h1", {}, "Lineage of ", m ? `${m.item || m.step}.${m.output} ` : "", h("code", { id: "artifact", class: "digest" }, doc.digest)),
    problems.length ? h("section", { class: "failure", id: "problems" }, h("h2", {}, "Missing or corrupt artifacts"),
      h("ul", {}, problems.map(([d, what]) => h("li", {}, h("code", { class: "digest" }, d), `: ${what}`)))) : null,
    m ? h("section", { id: "made-by" }, facts("made-by", [
      ["made by run", h("a", { href: runHref(m.run) }, m.run)],
      ["step", m.item || m.step], ["output", m.output],
      ["pipeline", m.pipeline ? h("a", { href: pipelineHref(m.pipeline) }, m.pipeline) : "-"],
      ["pipeline spec", m.pipelineSpecDigest || "-"], ["run phase", phase(m.phase)], ["started", fmtTime(m.startedAt)],
    ])) : h("p", { class: "none", id: "made-by" }, "No recorded run wrote this artifact: it is data read from outside, or its producer's record is gone."),
    m ? [h("h2", {}, "Run parameters"), keyValues("parameters", m.parameters)] : null,
    doc.graph ? [h("h2", {}, "Drawing"), svg] : null,
    doc.steps.length ? [h("h2", {}, "From the artifact back to the data"),
      h("ol", { id: "chain", class: "chain" }, doc.steps.map((hop) => hopBlock(doc, hop)))] : null,
    doc.data.length ? [h("h2", {}, "External data"), table("data", ["uri", "digest", "read by"], doc.data.map((d) => [h("span", { class: "uri" }, d.uri || "-"), digestLink(d.digest), d.readBy]))] : null,
    h("h2", {}, "Read by"),
    doc.readBy.length ? h("ul", { id: "read-by" }, doc.readBy.map((r) => h("li", {}, h("a", { href: runHref(r.run) }, r.run), ` step ${r.step}`)))
      : h("p", { class: "none", id: "read-by" }, "no recorded step read it"),
    h("h2", {}, "Runs involved"),
    h("ul", { id: "runs-involved" }, doc.runs.map((r) => h("li", {}, h("a", { href: runHref(r) }, r)))));
}

// ------------------------------------------------------------------ pipelines

async function pipelinesPage(app) {
  document.title = "Pipelines · Conveyor";
  let doc;
  try { doc = await api("/api/pipelines"); } catch (e) { fail(app, e); return; }
  const phases = (p) => Object.entries(p).map(([k, n]) => `${n} ${k}`).join(", ");
  mount(app,
    h("h1", {}, "Pipelines"),
    h("p", { id: "pipeline-count", class: "count" }, `${doc.total} pipeline${doc.total === 1 ? "" : "s"}, as the recorded runs ran them`),
    doc.pipelines.length ? h("table", { id: "pipelines", class: "pipelines" },
      h("thead", {}, h("tr", {}, ["Pipeline", "Runs", "Phases", "Spec versions", "Newest run", "Its phase", "Started"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, doc.pipelines.map((p) => h("tr", { class: "pipeline", dataset: { pipeline: p.name } },
        h("td", { class: "name" }, h("a", { href: pipelineHref(p.name) }, p.name)),
        h("td", { class: "runs" }, String(p.runs)), h("td", {}, phases(p.phases)), h("td", {}, String(p.versions)),
        h("td", {}, h("a", { href: runHref(p.lastRun.id) }, p.lastRun.id)), h("td", {}, phase(p.lastRun.phase)),
        h("td", {}, fmtTime(p.lastRun.startedAt))))))
      : h("p", { class: "none" }, "No runs yet."));
}

function specBlock(v) {
  const spec = v.spec;
  const body = spec ? [
    spec.description ? h("p", { class: "description" }, spec.description) : null,
    h("h4", {}, "Parameters"),
    spec.parameters.length ? table("spec-params", ["name", "type", "default", "description"],
      spec.parameters.map((p) => [p.name, p.type, fmtValue(p.default), p.description || ""])) : h("p", { class: "none" }, "none"),
    h("h4", {}, "Steps"),
    table("spec-steps", ["step", "what", "reads", "after", "fan-out", "when", "retries", "cache"], spec.steps.map((s) => [
      s.name, s.what, s.inputs.map((i) => i.from).join(", ") || "-", s.dependsOn.join(", ") || "-", s.forEach || "-",
      s.when || "-", String(s.retries), s.cache ? "on" : "off"])),
    h("h4", {}, "Schedule and triggers"),
    spec.schedule || spec.triggers.length ? h("ul", {},
      spec.schedule ? h("li", {}, `cron ${spec.schedule.cron} (${spec.schedule.timeZone}), ${spec.schedule.concurrencyPolicy}${spec.schedule.suspend ? ", suspended" : ""}`) : null,
      spec.triggers.map((t) => h("li", {}, `${t.kind} trigger: ${t.what}`)))
      : h("p", { class: "none" }, "none: runs start when someone runs them"),
  ] : [h("p", { class: "none" }, "This spec is not in the store (runs recorded before specs were kept): only its digest is known.")];
  return h("section", { class: "version", dataset: { digest: v.digest } },
    h("h3", {}, "Spec ", h("code", { class: "digest" }, v.digest)),
    h("p", {}, `${v.runs} run${v.runs === 1 ? "" : "s"}, first `, h("a", { href: runHref(v.firstRun) }, v.firstRun), ", last ", h("a", { href: runHref(v.lastRun) }, v.lastRun)),
    body);
}

async function pipelinePage(app) {
  const name = decodeURIComponent(location.pathname.split("/")[2] || "");
  document.title = `${name} · Pipelines · Conveyor`;
  let doc;
  try { doc = await api("/api/pipelines/" + encodeURIComponent(name)); } catch (e) { fail(app, e); return; }
  const params = (p) => Object.entries(p).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${fmtValue(v)}`).join(", ");
  mount(app,
    h("h1", {}, "Pipeline ", h("span", { id: "pipeline-name" }, doc.name)),
    h("p", {}, h("a", { href: "/?pipeline=" + encodeURIComponent(doc.name) }, `all ${doc.total} run${doc.total === 1 ? "" : "s"} in the runs list`)),
    h("h2", {}, `Recent runs (${doc.runs.length} of ${doc.total})`),
    h("table", { id: "pipeline-runs", class: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Phase", "Steps", "Started", "Duration", "Spec", "Parameters"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, doc.runs.map((r) => h("tr", { class: "run", dataset: { run: r.id, phase: r.phase } },
        h("td", { class: "run-id" }, h("a", { href: runHref(r.id) }, r.id)), h("td", {}, phase(r.phase)),
        h("td", {}, r.progress), h("td", {}, fmtTime(r.startedAt)), h("td", {}, fmtSeconds(r.seconds)),
        h("td", {}, h("code", { class: "digest" }, shortDigest(r.pipelineSpecDigest))), h("td", { class: "params" }, params(r.parameters)))))),
    h("h2", {}, `Spec versions (${doc.versions.length})`),
    doc.versions.length ? doc.versions.map(specBlock) : h("p", { class: "none" }, "No run of it has a record yet."));
}

// ------------------------------------------------------------------ model deployments

function deploymentHref(id) { return "/deployments/" + encodeURIComponent(id); }
function modelText(m) { return m ? `${m.version || "(no version)"} ${shortDigest(m.digest)}` : "-"; }
function fmtNumber(v) { return v === null || v === undefined ? "-" : Number(Number(v).toPrecision(4)).toString(); }

async function deploymentsPage(app) {
  document.title = "Model deployments · Conveyor";
  let doc;
  try { doc = await api("/api/deployments"); } catch (e) { fail(app, e); return; }
  mount(app,
    h("h1", {}, "Model deployments"),
    h("p", { id: "deployment-count", class: "count" }, `${doc.total} model deployment${doc.total === 1 ? "" : "s"}`),
    doc.note ? h("p", { class: "none" }, doc.note) : null,
    doc.deployments.length ? h("table", { id: "deployments", class: "deployments" },
      h("thead", {}, h("tr", {}, ["Deployment", "Ready", "Replicas ready", "Serving", "Canary", "Drift score", "Retraining", "Model from"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, doc.deployments.map((d) => h("tr", { class: "deployment", dataset: { deployment: d.id } },
        h("td", { class: "name" }, h("a", { href: deploymentHref(d.id) }, d.id)), h("td", { class: "ready" }, d.ready || "-"),
        h("td", { class: "replicas" }, String(d.readyReplicas)), h("td", { class: "current" }, modelText(d.current)),
        h("td", { class: "canary" }, modelText(d.canary)), h("td", { class: "drift" }, fmtNumber(d.driftScore)),
        h("td", { class: "retraining" }, d.retraining || "-"), h("td", {}, d.source)))))
      : h("p", { class: "none" }, "No model deployments."));
}

function modelFacts(cls, m, extra = []) {
  if (!m) return h("p", { class: `none ${cls}` }, "none");
  return facts(cls, [["version", m.version || "-"], ["digest", digestLink(m.digest)], ["uri", h("span", { class: "uri" }, m.uri || "-")], ...extra]);
}

async function deploymentPage(app) {
  const id = decodeURIComponent(location.pathname.split("/")[2] || "");
  const url = "/api/deployments/" + encodeURIComponent(id);
  document.title = `${id} · Model deployments · Conveyor`;
  function render(d) {
    const c = d.canaryStatus;
    mount(app,
      h("h1", {}, "Model deployment ", h("span", { id: "deployment-name" }, d.id)),
      h("section", { id: "summary" }, facts("summary", [
        ["ready", d.ready || "-"], ["ready replicas", h("span", { id: "ready-replicas" }, String(d.readyReplicas))],
        ["replicas (autoscaling)", `${d.replicas.min ?? "-"} to ${d.replicas.max ?? "-"}`], ["rollout", d.strategy],
        ["model from", d.source], ["generation", `${d.observedGeneration ?? "-"} observed of ${d.generation ?? "-"}`],
      ])),
      h("h2", {}, "Serving now"), modelFacts("current", d.current),
      h("h2", {}, "Canary"), c ? modelFacts("canary", d.canary, [
        ["step", `${c.step + 1} of ${c.steps || 1}${c.promoting ? ", promoting" : ""}`], ["step started", fmtTime(c.stepStartedAt)],
        ["requests", String(c.requests)], ["error rate", c.errorRate === null || c.errorRate === undefined ? "-" : `${(100 * c.errorRate).toFixed(2)} %`],
      ]) : h("p", { class: "none canary" }, "no canary in progress"),
      h("h2", {}, "Served before"), modelFacts("previous", d.previous),
      d.rejected ? [h("h2", {}, "Rejected"), modelFacts("rejected", d.rejected, [["reason", d.rejected.reason], ["message", d.rejected.message || "-"], ["at", fmtTime(d.rejected.at)]])] : null,
      h("h2", {}, "Traffic"), d.traffic.length ? table("traffic", ["model", "weight"], d.traffic.map((t) => [digestLink(t.digest, shortDigest(t.digest)), `${t.weight} %`])) : h("p", { class: "none" }, "-"),
      h("h2", {}, "Conditions"), d.conditions.length ? table("conditions", ["type", "status", "reason", "message", "since"],
        d.conditions.map((x) => [x.type, x.status, x.reason || "-", x.message || "-", fmtTime(x.lastTransitionTime)])) : h("p", { class: "none" }, "none yet"),
      h("h2", {}, "Drift"), d.drift ? [
        facts("drift", [["score", h("span", { id: "drift-score" }, fmtNumber(d.drift.score))], ["threshold", fmtNumber(d.drift.threshold)],
          ["rows", String(d.drift.rows)], ["above the threshold since", fmtTime(d.drift.aboveSince)], ["measured", fmtTime(d.drift.at)]]),
        d.drift.features.length ? table("drift-features", ["feature", "score", "measure", "drifted"],
          d.drift.features.map((f) => [f.name, fmtNumber(f.score), f.measure || "-", f.drifted ? "yes" : "no"])) : null,
      ] : h("p", { class: "none drift" }, d.driftScore === null || d.driftScore === undefined ? "not measured" : `score ${fmtNumber(d.driftScore)}`),
      h("h2", {}, "Live accuracy"), d.liveAccuracy.length ? table("live-accuracy", ["version", "labels", "accuracy", "mean absolute error"],
        d.liveAccuracy.map((a) => [a.version, String(a.labels), fmtNumber(a.accuracy), fmtNumber(a.meanAbsoluteError)]))
        : h("p", { class: "none live-accuracy" }, "no labelled predictions yet"),
      d.minAccuracy !== null && d.minAccuracy !== undefined ? h("p", {}, `retrains below accuracy ${fmtNumber(d.minAccuracy)}`) : null,
      h("h2", {}, "Retraining"), d.retrainingStatus ? facts("retraining", [
        ["run", h("a", { href: runHref(`${d.namespace}/${d.retrainingStatus.run}`) }, d.retrainingStatus.run)],
        ["its phase", d.retrainingStatus.runPhase ? phase(d.retrainingStatus.runPhase) : "-"],
        ["why", `${d.retrainingStatus.reason}${d.retrainingStatus.message ? ": " + d.retrainingStatus.message : ""}`],
        ["started", fmtTime(d.retrainingStatus.at)]])
        : h("p", { class: "none retraining" }, d.retrainPipeline ? `none yet (pipeline ${d.retrainPipeline} retrains it)` : "not configured"),
      h("h2", {}, "Recent events"), d.events.length ? table("events", ["last seen", "type", "reason", "message", "count"],
        d.events.map((e) => [fmtTime(e.at), e.type || "-", e.reason || "-", e.message || "", String(e.count)])) : h("p", { class: "none" }, "no events"));
  }
  let doc;
  try { doc = await api(url); } catch (e) { fail(app, e); return; }
  render(doc);
  pollEvery(async () => { const next = await api(url, { conditional: true }); if (next) render(next); });
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", () => {
  const app = document.getElementById("app");
  api("/api/source").then((s) => { document.getElementById("where").textContent = s.description; }).catch(() => {});
  const page = document.body.dataset.page;
  const section = { runs: "/", run: "/", compare: "/", pipelines: "/pipelines", pipeline: "/pipelines", lineage: "/lineage", deployments: "/deployments", deployment: "/deployments" }[page];
  for (const a of document.querySelectorAll("header nav a")) if (a.getAttribute("href") === section) a.setAttribute("aria-current", "page");
  const pages = { runs: runsPage, run: runPage, compare: comparePage, lineage: lineagePage, pipelines: pipelinesPage, pipeline: pipelinePage, deployments: deploymentsPage, deployment: deploymentPage };
  (pages[page] || runsPage)(app).catch((e) => fail(app, e));
});
