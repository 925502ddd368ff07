// Sessions: a listing (GET /api/v1/sessions) and one conversation as a timeline.
import { html, useLocation, navigate, Link, useApi, ErrorBox, projectChoice } from "../lib/ui.js";
import { Markdown } from "../lib/markdown.js";
import { count, ms, usd, time, ago, PRESETS, fromPreset } from "../lib/format.js";

const SORTS = [["last_seen", "Last seen"], ["first_seen", "First seen"], ["inferences", "Inferences"], ["tokens", "Tokens"], ["cost", "Cost"], ["errors", "Errors"]];

function setParams(changes) {
  const query = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) { if (v === "" || v === null || v === undefined) query.delete(k); else query.set(k, v); }
  if (!("offset" in changes)) query.delete("offset");
  const text = query.toString();
  navigate(`/sessions${text ? "?" + text : ""}`, { replace: true });
}

export function SessionsPage() {
  const { query } = useLocation();
  const limit = 50;
  const offset = Number(query.get("offset") || 0);
  const params = new URLSearchParams({ from_date: fromPreset(query.get("range") || "7d"), sort_by: query.get("sort") || "last_seen",
    sort_order: query.get("order") || "desc", limit: String(limit), offset: String(offset) });
  for (const name of ["user_id", "model", "search", "has_errors"]) if (query.get(name)) params.set(name, query.get(name));
  if (projectChoice.value) params.set("project_id", projectChoice.value);
  const { data, error, loading } = useApi(`/api/v1/sessions?${params}`);
  const text = (name, label) => html`<label>${label}<input value=${query.get(name) || ""} onChange=${(e) => setParams({ [name]: e.target.value.trim() })} /></label>`;
  return html`<section class="page sessions">
    <div class="titlebar"><h1>Sessions</h1><span class="muted">${data ? `${count(data.total_count)} sessions` : ""}</span></div>
    <div class="filters" role="group" aria-label="Filters">
      <label>Range<select value=${query.get("range") || "7d"} onChange=${(e) => setParams({ range: e.target.value })}>
        ${Object.keys(PRESETS).map((p) => html`<option value=${p}>last ${p}</option>`)}</select></label>
      ${text("search", "Session id contains")}${text("user_id", "User")}${text("model", "Model")}
      <label>Errors<select value=${query.get("has_errors") || ""} onChange=${(e) => setParams({ has_errors: e.target.value })}>
        <option value="">any</option><option value="true">with errors</option><option value="false">without</option></select></label>
      <label>Sort<select value=${query.get("sort") || "last_seen"} onChange=${(e) => setParams({ sort: e.target.value })}>
        ${SORTS.map(([k, l]) => html`<option value=${k}>${l}</option>`)}</select></label>
      <label>Order<select value=${query.get("order") || "desc"} onChange=${(e) => setParams({ order: e.target.value })}>
        <option value="desc">descending</option><option value="asc">ascending</option></select></label>
    </div>
    <${ErrorBox} error=${error} />
    ${data && html`<div class="table-wrap"><table class="grid">
      <thead><tr><th>Session</th><th>Project</th><th>User</th><th>First</th><th>Last</th><th class="num">Inferences</th><th class="num">Tokens</th><th class="num">Cost</th><th class="num">Errors</th><th>Models</th></tr></thead>
      <tbody>${data.items.map((s) => {
        const href = `/sessions/${encodeURIComponent(s.session_id)}?project_id=${encodeURIComponent(s.project_id)}`;
        return html`<tr data-testid="session-row" data-session-id=${s.session_id} tabindex="0" onClick=${() => navigate(href)}
            onKeyDown=${(e) => { if (e.key === "Enter") navigate(href); }}>
          <td><code>${s.session_id}</code></td><td>${s.project_id}</td><td>${s.user_id}</td><td>${time(s.first_seen)}</td>
          <td title=${s.last_seen}>${ago(s.last_seen)}</td><td class="num">${count(s.inference_count)}</td><td class="num">${count(s.total_tokens)}</td>
          <td class="num">${usd(s.cost_usd)}</td><td class="num">${s.error_count ? html`<span class="bad">${s.error_count}</span>` : "0"}</td>
          <td>${(s.models || []).join(", ")}</td></tr>`;
      })}</tbody></table></div>
      ${!data.items.length && html`<p class="empty">No session in this range. Sessions come from the session.id attribute (or langfuse.session.id) on GenAI spans.</p>`}
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled=${offset === 0} onClick=${() => setParams({ offset: String(Math.max(offset - limit, 0)) })}>← Previous</button>
        <button type="button" disabled=${!data.has_more} onClick=${() => setParams({ offset: String(offset + limit) })}>Next →</button>
      </nav>`}
    ${loading && !data && html`<p class="boot">Loading…</p>`}
  </section>`;
}

// The conversation across the session's inferences: each turn shows the messages not shown yet
// (every call re-sends the history), then the answer.
export function SessionPage({ params }) {
  const [sessionId] = params;
  const { query } = useLocation();
  const project = query.get("project_id") || projectChoice.value;
  const path = `/api/v1/sessions/${encodeURIComponent(sessionId)}${project ? `?project_id=${encodeURIComponent(project)}` : ""}`;
  const { data, error } = useApi(path);
  if (error) return html`<section class="page"><h1>Session <code>${sessionId}</code></h1><${ErrorBox} error=${error} /><${Link} href="/sessions">← Sessions<//></section>`;
  if (!data) return html`<p class="boot">Loading…</p>`;
  const shown = new Set();
  return html`<section class="page session">
    <div class="titlebar"><${Link} href="/sessions">← Sessions<//><h1>Session <code>${data.session_id}</code></h1></div>
    <p class="muted">${data.project_id} · user ${data.user_id || "–"} · ${count(data.inference_count)} inferences · ${count(data.input_tokens)} in / ${count(data.output_tokens)} out · ${usd(data.cost_usd)} · ${data.error_count} errors · ${time(data.first_seen)} → ${time(data.last_seen)}</p>
    ${data.truncated && html`<p class="note">Showing the first ${data.inferences.length} inferences.</p>`}
    <ol class="chat" data-testid="session-timeline">${data.inferences.map((inf) => {
      const fresh = (inf.messages || []).filter((m) => {
        const key = `${m.direction}|${m.role}|${m.tool_call_id}|${m.content}`;
        if (m.direction === "input" && shown.has(key)) return false;
        shown.add(key);
        return true;
      });
      return html`<li class="turn" data-testid="session-turn">
        <header><${Link} href=${`/inferences/${inf.inference_id}`}>${time(inf.timestamp)}<//><span>${inf.model}</span><span>${ms(inf.latency_ms)}</span>
          <span>${count(inf.input_tokens)} / ${count(inf.output_tokens)} tokens</span><span>${usd(inf.cost_usd)}</span>
          ${inf.is_success ? "" : html`<span class="bad">${inf.error_type || "error"}</span>`}</header>
        <ol class="conversation">${fresh.map((m) => html`<li class=${`message role-${m.role}`} data-testid="message" data-role=${m.role}>
          <div class="role">${m.role}</div><${Markdown} text=${m.content} /></li>`)}</ol>
      </li>`;
    })}</ol>
  </section>`;
}
