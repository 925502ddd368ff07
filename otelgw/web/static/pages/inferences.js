// Inferences (home): the listing API as a table. Filters, sort and cursor live in the URL.
import { html, useState, useEffect, useRef, useLocation, navigate, api, projectChoice, ErrorBox } from "../lib/ui.js";
import { count, ms, usd, time, ago, PRESETS, fromPreset } from "../lib/format.js";

const COLUMNS = [
  ["time", "Time"], ["project", "Project"], ["service", "Service"], ["model", "Model"], ["provider", "Provider"],
  ["tokens", "Tokens in/out"], ["latency", "Latency"], ["ttft", "TTFT"], ["cost", "Cost"], ["status", "Status"],
  ["finish", "Finish"], ["feedback", "Feedback"],
];
const SORTABLE = { time: "timestamp", tokens: "tokens", latency: "latency", cost: "cost", ttft: "ttft" };
const TEXT_FILTERS = [["model", "Model"], ["provider", "Provider"], ["session_id", "Session"], ["user_id", "User"],
  ["finish_reason", "Finish reason"]];
const NUMBER_FILTERS = [["min_tokens", "Min tokens"], ["max_tokens", "Max tokens"], ["max_latency_ms", "Max latency (ms)"]];
const COLUMN_STORE = "otelgw.columns";

// The listing request for the URL's filters.
export function listBody(query) {
  const body = {};
  const range = query.get("range") || "24h";
  if (range === "custom" && query.get("from")) {
    body.from_date = new Date(query.get("from")).toISOString();
    if (query.get("to")) body.to_date = new Date(query.get("to")).toISOString();
  } else {
    body.from_date = fromPreset(range);
  }
  for (const [name] of TEXT_FILTERS) if (query.get(name)) body[name] = query.get(name);
  for (const [name] of NUMBER_FILTERS) if (query.get(name)) body[name] = Number(query.get(name));
  if (query.get("status")) body.is_success = query.get("status") === "ok";
  if (query.get("has_feedback")) body.has_feedback = query.get("has_feedback") === "yes";
  if (query.get("search")) body.search = query.get("search");
  if (projectChoice.value) body.project_id = projectChoice.value;
  body.sort_by = query.get("sort") || "timestamp";
  body.sort_order = query.get("order") || "desc";
  return body;
}

function setParams(changes, { keepCursor = false } = {}) {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === "" || value === null || value === undefined) query.delete(key);
    else query.set(key, value);
  }
  if (!keepCursor) query.delete("cursor");
  const text = query.toString();
  navigate(`/${text ? "?" + text : ""}`, { replace: true });
}

function Filters({ query }) {
  const [draft, setDraft] = useState({});
  const value = (name) => (name in draft ? draft[name] : query.get(name) || "");
  const apply = (event) => { event.preventDefault(); setParams(draft); setDraft({}); };
  const field = (name, label, type = "text") => html`
    <label>${label}<input type=${type} name=${name} value=${value(name)} min=${type === "number" ? 0 : undefined}
      onInput=${(e) => setDraft({ ...draft, [name]: e.target.value })} /></label>`;
  const range = query.get("range") || "24h";
  return html`<form class="filters" onSubmit=${apply} aria-label="Filters">
    <label>Range<select value=${range} onChange=${(e) => setParams({ range: e.target.value })} data-testid="range">
      ${Object.keys(PRESETS).map((p) => html`<option value=${p}>last ${p}</option>`)}
      <option value="custom">custom</option></select></label>
    ${range === "custom" && html`${field("from", "From", "datetime-local")}${field("to", "To", "datetime-local")}`}
    ${field("search", "Text search")}
    ${TEXT_FILTERS.map(([name, label]) => field(name, label))}
    <label>Status<select value=${query.get("status") || ""} onChange=${(e) => setParams({ status: e.target.value })} data-testid="status-filter">
      <option value="">any</option><option value="ok">success</option><option value="error">error</option></select></label>
    <label>Feedback<select value=${query.get("has_feedback") || ""} onChange=${(e) => setParams({ has_feedback: e.target.value })}>
      <option value="">any</option><option value="yes">with feedback</option><option value="no">without</option></select></label>
    ${NUMBER_FILTERS.map(([name, label]) => field(name, label, "number"))}
    <button type="submit">Apply</button>
    <button type="button" class="link" onClick=${() => { setDraft({}); navigate("/", { replace: true }); }}>Clear</button>
  </form>`;
}

function ColumnChooser({ shown, setShown }) {
  return html`<details class="columns"><summary>Columns</summary>
    ${COLUMNS.map(([key, label]) => html`<label><input type="checkbox" checked=${shown.includes(key)}
      onChange=${(e) => setShown(e.target.checked ? [...shown, key] : shown.filter((k) => k !== key))} />${label}</label>`)}
  </details>`;
}

async function exportAs(format, query) {
  const body = listBody(query);
  delete body.sort_by;
  const response = await api("/api/v1/metrics/inferences/export", { method: "POST", body: { ...body, format }, raw: true });
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `inferences.${format === "parquet" ? "parquet" : format}`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function Row({ item, shown }) {
  const open = () => navigate(`/inferences/${item.inference_id}`);
  const cells = {
    time: html`<td title=${item.timestamp}>${time(item.timestamp)}</td>`,
    project: html`<td>${item.project_id}</td>`,
    service: html`<td>${item.service_name}</td>`,
    model: html`<td class="model">${item.model}</td>`,
    provider: html`<td>${item.provider}</td>`,
    tokens: html`<td class="num">${count(item.input_tokens)} / ${count(item.output_tokens)}</td>`,
    latency: html`<td class="num">${ms(item.latency_ms)}</td>`,
    ttft: html`<td class="num">${ms(item.ttft_ms)}</td>`,
    cost: html`<td class="num">${usd(item.cost_usd)}</td>`,
    status: html`<td>${item.is_success ? html`<span class="ok">ok</span>` : html`<span class="bad" title=${item.error_type}>${item.error_type || "error"}</span>`}</td>`,
    feedback: html`<td class="num">${item.feedback_count || ""}</td>`,
    finish: html`<td data-testid="finish-reason">${item.finish_reason}</td>`,
  };
  return html`<tr data-testid="inference-row" data-inference-id=${item.inference_id} tabindex="0" onClick=${open}
      onKeyDown=${(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } }}>
    ${COLUMNS.filter(([key]) => shown.includes(key)).map(([key]) => cells[key])}
  </tr>`;
}

export function InferencesPage() {
  const { query } = useLocation();
  const [shown, setShownState] = useState(() => JSON.parse(localStorage.getItem(COLUMN_STORE) || "null") || COLUMNS.map(([k]) => k));
  const setShown = (next) => { setShownState(next); localStorage.setItem(COLUMN_STORE, JSON.stringify(next)); };
  const [page, setPage] = useState({ items: [], total_count: 0, has_more: false, next_cursor: null });
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [live, setLive] = useState(false);
  const [cursors, setCursors] = useState([]);
  const limit = Number(query.get("limit") || 50);
  const cursor = query.get("cursor") || null;
  const key = query.toString() + "|" + projectChoice.value;
  const newest = useRef(null);

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    api("/api/v1/metrics/inferences/list", { method: "POST", body: { ...listBody(query), limit, ...(cursor ? { cursor } : {}) }, signal: controller.signal })
      .then((data) => { setPage(data); setError(null); setLoading(false); newest.current = data.items[0]?.timestamp || null; })
      .catch((e) => { if (e.name !== "AbortError") { setError(e); setLoading(false); } });
    return () => controller.abort();
  }, [key]);

  // Live: every 3 s, the rows newer than the newest shown are prepended (first page, newest first).
  useEffect(() => {
    if (!live || cursor || (query.get("sort") || "timestamp") !== "timestamp" || query.get("order") === "asc") return undefined;
    const timer = setInterval(async () => {
      const body = { ...listBody(query), limit: 200 };
      // Strictly after the newest row shown (+1 ms): an empty poll reads no content (and is not
      // an audited read).
      if (newest.current) body.from_date = new Date(new Date(newest.current).getTime() + 1).toISOString();
      try {
        const data = await api("/api/v1/metrics/inferences/list", { method: "POST", body });
        setPage((current) => {
          const seen = new Set(current.items.map((i) => i.inference_id));
          const fresh = data.items.filter((i) => !seen.has(i.inference_id));
          if (!fresh.length) return current;
          newest.current = fresh[0].timestamp;
          return { ...current, items: [...fresh, ...current.items].slice(0, Math.max(limit, 1000)), total_count: current.total_count + fresh.length };
        });
      } catch (_) { /* the next tick tries again */ }
    }, 3000);
    return () => clearInterval(timer);
  }, [live, key]);

  const sortBy = query.get("sort") || "timestamp";
  const order = query.get("order") || "desc";
  const header = ([keyName, label]) => {
    const sortKey = SORTABLE[keyName];
    if (!sortKey) return html`<th scope="col">${label}</th>`;
    const active = sortBy === sortKey;
    const next = active && order === "desc" ? "asc" : "desc";
    return html`<th scope="col" aria-sort=${active ? (order === "desc" ? "descending" : "ascending") : "none"}>
      <button type="button" class="sort" onClick=${() => setParams({ sort: sortKey, order: next })} data-testid=${`sort-${sortKey}`}>
        ${label}${active ? (order === "desc" ? " ▾" : " ▴") : ""}</button></th>`;
  };
  const next = () => { setCursors([...cursors, cursor]); setParams({ cursor: page.next_cursor }, { keepCursor: true }); };
  const previous = () => { const stack = [...cursors]; const back = stack.pop(); setCursors(stack); setParams({ cursor: back || "" }, { keepCursor: true }); };

  return html`<section class="page">
    <div class="titlebar"><h1>Inferences</h1>
      <span class="muted" data-testid="total-count">${loading ? "loading…" : `${count(page.total_count)} matching`}</span>
      <div class="spacer"></div>
      <label class="toggle"><input type="checkbox" checked=${live} onChange=${(e) => setLive(e.target.checked)} data-testid="live" /> Live</label>
      <${ColumnChooser} shown=${shown} setShown=${setShown} />
      <div class="exports" role="group" aria-label="Export">
        ${["csv", "json", "parquet"].map((f) => html`<button type="button" onClick=${() => exportAs(f, query).catch(setError)}>${f.toUpperCase()}</button>`)}
      </div>
    </div>
    <${Filters} query=${query} />
    <${ErrorBox} error=${error} />
    <div class="table-wrap"><table class="grid" data-testid="inference-table">
      <thead><tr>${COLUMNS.filter(([k]) => shown.includes(k)).map(header)}</tr></thead>
      <tbody>${page.items.map((item) => html`<${Row} key=${item.inference_id} item=${item} shown=${shown} />`)}</tbody>
    </table></div>
    ${!loading && !page.items.length && html`<p class="empty">No inference matches. Widen the range or clear the filters.</p>`}
    <nav class="pager" aria-label="Pages">
      <button type="button" onClick=${previous} disabled=${!cursor}>← Newer</button>
      <label>Rows <select value=${String(limit)} onChange=${(e) => setParams({ limit: e.target.value })}>
        ${[50, 100, 500, 1000].map((n) => html`<option value=${String(n)}>${n}</option>`)}</select></label>
      <button type="button" onClick=${next} disabled=${!page.has_more || !page.next_cursor} data-testid="next-page">Older →</button>
      ${page.items[0] && html`<span class="muted">newest ${ago(page.items[0].timestamp)}</span>`}
    </nav>
  </section>`;
}
