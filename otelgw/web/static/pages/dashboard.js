// Dashboard: totals and time series from POST /observability/analytics, one request per view.
// Range, frequency, grouping and top k live in the URL, so a view is a link.
import uPlot from "../vendor/uPlot.esm.js";
import { html, useState, useEffect, useRef, useMemo, useLocation, navigate, api, projectChoice, ErrorBox } from "../lib/ui.js";
import { count, ms, usd, pct, PRESETS, fromPreset } from "../lib/format.js";

const RANGES = ["1h", "24h", "7d", "30d", "90d"];
const FREQUENCIES = [["hour", "hourly"], ["day", "daily (UTC)"], ["week", "weekly (UTC, from Monday)"]];
const GROUPS = [["none", "none"], ["model", "model"], ["project", "project"], ["endpoint", "endpoint (service)"], ["provider", "provider"]];
const GROUP_FIELD = { model: "model_id", project: "project_id", endpoint: "endpoint_id", provider: "provider" };
const METRICS = ["request_count", "failure_request", "latency", "ttft", "input_token", "output_token", "cost"];
const OTHER = "other";
// The theme's --bar1..--bar4 and four more with ≥ 3:1 against both backgrounds, ordered so that
// the first five (top 5 by default) are far apart in hue; "other" is always --muted, dashed.
const MORE_COLOURS = ["#e64980", "#1098ad", "#e8590c", "#ae3ec9"];
const ORDER = [0, 1, 2, 4, 5, 3, 6, 7]; // blue, amber, green, pink, cyan, violet, orange, grape
const HEIGHT = 220;

// --- the view, from the URL ---
function viewOf(query) {
  const range = RANGES.includes(query.get("range")) ? query.get("range") : "24h";
  const freqs = FREQUENCIES.map(([f]) => f);
  const freq = freqs.includes(query.get("freq")) ? query.get("freq") : (PRESETS[range] <= PRESETS["7d"] ? "hour" : "day");
  const asked = query.get("group");
  const group = asked === "none" ? "" : (GROUP_FIELD[asked] ? asked : "model");
  const topk = Math.min(50, Math.max(1, Math.round(Number(query.get("topk")) || 5)));
  return { range, freq, group, topk };
}

function setParams(changes) {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === "" || value === null || value === undefined) query.delete(key);
    else query.set(key, value);
  }
  const text = query.toString();
  navigate(`/dashboard${text ? "?" + text : ""}`, { replace: true });
}

export function analyticsBody(view, project) {
  const body = {
    metrics: METRICS, from_date: fromPreset(view.range), frequency_unit: view.freq,
    return_delta: true, fill_time_gaps: true,
  };
  if (view.group) { body.group_by = [view.group]; body.topk = view.topk; }
  if (project) body.filters = { project };
  return body;
}

// --- the answer, as columns for uPlot ---
function groupName(item, group) {
  if (!group) return "all";
  const value = item[GROUP_FIELD[group]];
  return value === null || value === undefined || value === "" ? "(unset)" : String(value);
}

function shape(response, group) {
  const buckets = [...response.items].reverse(); // the API answers newest first
  const x = buckets.map((b) => Date.parse(b.time_period + "Z") / 1000);
  // Groups by requests over the range, largest first; "other" last.
  const totals = new Map();
  for (const g of response.summary || []) totals.set(groupName(g, group), g.data.request_count?.count || 0);
  for (const b of buckets) {
    for (const item of b.items) {
      const name = groupName(item, group);
      if (!totals.has(name)) totals.set(name, 0);
    }
  }
  const groups = [...totals.keys()].sort((a, b) => (a === OTHER) - (b === OTHER) || totals.get(b) - totals.get(a) || a.localeCompare(b));
  const cells = buckets.map((b) => new Map(b.items.map((item) => [groupName(item, group), item.data])));
  const column = (name, pick) => cells.map((cell) => {
    const data = cell.get(name);
    const value = data ? pick(data) : null;
    return value === undefined ? null : value;
  });
  return { x, groups, column, summary: response.summary || [] };
}

// --- totals over the range for the tiles ---
const sumOf = (rows, pick) => rows.reduce((total, row) => total + (pick(row) || 0), 0);
const change = (current, previous) => (current === null || previous === null || !previous ? null : ((current - previous) / previous) * 100);

// One group: the API's numbers. Several: counts and averages recombined exactly; an overall
// percentile cannot be rebuilt from the groups' (the API returns them per group only), so the
// tiles show the spread of the groups' p95 instead.
function spread(rows, metric, weightOf) {
  const values = rows.filter((d) => weightOf(d) > 0 && d[metric].p95 !== null).map((d) => d[metric].p95);
  return values.length ? { low: Math.min(...values), high: Math.max(...values) } : null;
}

function weightedAvg(rows, metric, weightOf, previous) {
  let sum = 0;
  let weight = 0;
  for (const d of rows) {
    const m = d[metric];
    const w = weightOf(d, previous);
    const avg = previous ? (m.avg === null || m.delta === null ? null : m.avg - m.delta) : m.avg;
    if (avg === null || !(w > 0)) continue;
    sum += avg * w;
    weight += w;
  }
  return weight ? sum / weight : null;
}

export function totals(summary) {
  const rows = summary.map((g) => g.data);
  if (!rows.length) return null;
  const single = rows.length === 1 ? rows[0] : null;
  const additive = (metric, field) => {
    const current = sumOf(rows, (d) => d[metric][field]);
    const previous = sumOf(rows, (d) => d[metric][field] - (d[metric].delta || 0));
    return { value: current, previous, delta: single ? single[metric].delta_percent : change(current, previous) };
  };
  const requests = additive("request_count", "count");
  const failures = additive("failure_request", "count");
  const rate = requests.value ? (failures.value / requests.value) * 100 : null;
  const previousRate = requests.previous ? (failures.previous / requests.previous) * 100 : null;
  const requestsOf = (d, previous) => d.request_count.count - (previous ? d.request_count.delta || 0 : 0);
  // TTFT's previous count is not in the answer: scale the current one by the requests' change.
  const ttftOf = (d, previous) => (previous ? d.ttft.count * (requestsOf(d, true) / (d.request_count.count || 1)) : d.ttft.count);
  const latencyAvg = single ? single.latency.avg : weightedAvg(rows, "latency", requestsOf, false);
  const latencyPrev = single ? null : weightedAvg(rows, "latency", requestsOf, true);
  const ttftAvg = single ? single.ttft.avg : weightedAvg(rows, "ttft", ttftOf, false);
  const ttftPrev = single ? null : weightedAvg(rows, "ttft", ttftOf, true);
  return {
    grouped: !single, // percentiles are then per group
    requests,
    failures,
    errorRate: { value: rate, previous: previousRate, delta: change(rate, previousRate) },
    latency: {
      value: latencyAvg, delta: single ? single.latency.delta_percent : change(latencyAvg, latencyPrev),
      p95: single ? single.latency.p95 : spread(rows, "latency", requestsOf),
    },
    ttft: {
      p95: single ? single.ttft.p95 : spread(rows, "ttft", (d) => d.ttft.count),
      avg: ttftAvg, delta: single ? single.ttft.delta_percent : change(ttftAvg, ttftPrev),
    },
    input: additive("input_token", "count"),
    output: additive("output_token", "count"),
    cost: additive("cost", "total_usd"),
  };
}

function Delta({ value, worseWhenUp = false, of }) {
  if (value === null || value === undefined || !Number.isFinite(value)) return html`<dd class="delta muted">no earlier data</dd>`;
  const rounded = Math.abs(value) < 0.05 ? 0 : value;
  const arrow = rounded > 0 ? "↑" : rounded < 0 ? "↓" : "→";
  const mood = rounded === 0 || worseWhenUp === null ? "" : (rounded > 0) === worseWhenUp ? "worse" : "better";
  const text = `${arrow} ${Math.abs(rounded).toFixed(Math.abs(rounded) < 10 ? 1 : 0)}%`;
  return html`<dd class=${`delta ${mood}`} title="change against the same length of time before the range">${text}${of ? html` <span class="muted">${of}</span>` : ""}</dd>`;
}

function Tile({ id, label, value, sub, delta, worseWhenUp = null, of, title }) {
  return html`<div class="stat" data-testid=${`stat-${id}`} title=${title}>
    <dt>${label}</dt><dd class="value">${value}</dd>
    ${sub ? html`<dd class="sub muted">${sub}</dd>` : ""}
    <${Delta} value=${delta} worseWhenUp=${worseWhenUp} of=${of} />
  </div>`;
}

// A percentile: one value, or the groups' lowest–highest.
function p95Text(value) {
  if (value === null || value === undefined || typeof value === "number") return ms(value);
  const [low, high] = [ms(value.low), ms(value.high)];
  if (low === high) return low;
  const [lowNumber, lowUnit] = low.split(" ");
  const [, highUnit] = high.split(" ");
  return lowUnit === highUnit ? `${lowNumber}–${high}` : `${low}–${high}`;
}

function Tiles({ summary, range, group }) {
  const t = useMemo(() => totals(summary), [summary]);
  if (!t) return null;
  const across = t.grouped ? `lowest–highest p95 of the ${group}s shown; the API has no overall percentile when grouped` : undefined;
  const before = (v, f) => (v === null || v === undefined ? undefined : `previous ${range}: ${f(v)}`);
  return html`<dl class="stats" aria-label=${`Totals over the last ${range}`}>
    <${Tile} id="requests" label="Requests" value=${count(t.requests.value)} delta=${t.requests.delta} title=${before(t.requests.previous, count)} />
    <${Tile} id="error-rate" label="Error rate" value=${pct(t.errorRate.value)} sub=${`${count(t.failures.value)} failed`}
      delta=${t.errorRate.delta} worseWhenUp=${true} title=${before(t.errorRate.previous, pct)} />
    <${Tile} id="latency" label="Latency avg" value=${ms(t.latency.value)} sub=${`p95 ${p95Text(t.latency.p95)}${t.grouped ? ` by ${group}` : ""}`}
      delta=${t.latency.delta} worseWhenUp=${true} of="avg" title=${across} />
    <${Tile} id="ttft" label=${t.grouped ? `TTFT p95 by ${group}` : "TTFT p95"} value=${p95Text(t.ttft.p95)} sub=${`avg ${ms(t.ttft.avg)}`}
      delta=${t.ttft.delta} worseWhenUp=${true} of="avg" title=${across} />
    <${Tile} id="input-tokens" label="Tokens in" value=${count(t.input.value)} delta=${t.input.delta} title=${before(t.input.previous, count)} />
    <${Tile} id="output-tokens" label="Tokens out" value=${count(t.output.value)} delta=${t.output.delta} title=${before(t.output.previous, count)} />
    <${Tile} id="cost" label="Cost" value=${usd(t.cost.value)} delta=${t.cost.delta} title=${before(t.cost.previous, usd)} />
  </dl>`;
}

// --- charts ---
function useColourScheme() {
  const [dark, setDark] = useState(() => matchMedia("(prefers-color-scheme: dark)").matches);
  useEffect(() => {
    const query = matchMedia("(prefers-color-scheme: dark)");
    const onChange = () => setDark(query.matches);
    query.addEventListener("change", onChange);
    return () => query.removeEventListener("change", onChange);
  }, []);
  return dark;
}

function themeColours() {
  const css = getComputedStyle(document.documentElement);
  const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const bars = ["#4c6ef5", "#f59f00", "#12b886", "#7048e8"].map((fallback, i) => read(`--bar${i + 1}`, fallback));
  const all = [...bars, ...MORE_COLOURS];
  return { fg: read("--fg", "#1b1f24"), line: read("--line", "#d0d7de"), muted: read("--muted", "#57606a"), palette: ORDER.map((i) => all[i]) };
}

function bucketLabel(seconds, freq) {
  const d = new Date(seconds * 1000);
  if (freq === "hour") return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const day = d.toLocaleDateString(undefined, { timeZone: "UTC", weekday: freq === "day" ? "short" : undefined, month: "short", day: "numeric", year: "numeric" });
  return freq === "week" ? `week of ${day}` : day;
}

function Chart({ name, title, x, series, fmt, freq, dark }) {
  const box = useRef(null);
  const empty = !x.length || !series.length || series.every((s) => s.values.every((v) => v === null || v === 0));
  useEffect(() => {
    if (empty || !box.current) return undefined;
    const colours = themeColours();
    const font = `12px ${getComputedStyle(document.body).fontFamily}`;
    const axis = { stroke: colours.fg, font, grid: { stroke: colours.line, width: 1 }, ticks: { stroke: colours.line, width: 1 } };
    const few = x.length <= 48;
    const opts = {
      width: box.current.clientWidth || 500,
      height: HEIGHT,
      // Day and week buckets are UTC calendar buckets: label them in UTC.
      tzDate: freq === "hour" ? undefined : (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      axes: [{ ...axis }, { ...axis, size: 64, values: (u, splits) => splits.map((v) => (v === 0 ? "0" : fmt(v))) }],
      series: [
        { label: "Time", value: (u, v) => (v === null || v === undefined ? "–" : bucketLabel(v, freq)) },
        ...series.map((s, i) => {
          const colour = s.name === OTHER ? colours.muted : colours.palette[i % colours.palette.length];
          return {
            label: s.name, stroke: colour, width: 1.75, dash: s.name === OTHER ? [5, 4] : undefined,
            fill: series.length === 1 ? `${colour}22` : undefined,
            points: { show: few, size: 4 }, spanGaps: false,
            value: (u, v) => (v === null || v === undefined ? "–" : fmt(v)),
          };
        }),
      ],
      legend: { live: true },
      cursor: { points: { size: 6 } },
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)], box.current);
    let width = opts.width;
    const observer = new ResizeObserver(() => {
      const next = box.current ? box.current.clientWidth : 0;
      if (next && next !== width) { width = next; plot.setSize({ width, height: HEIGHT }); }
    });
    observer.observe(box.current);
    return () => { observer.disconnect(); plot.destroy(); };
  }, [x, series, freq, dark, empty]);
  return html`<figure class="chart" data-testid=${`chart-${name}`}>
    <figcaption><h2>${title}</h2></figcaption>
    ${empty ? html`<p class="empty">No data in this range.</p>` : html`<div class="plot" ref=${box}></div>`}
  </figure>`;
}

function chartsOf(shaped, group) {
  const { x, groups, column } = shaped;
  const per = (pick) => groups.map((name) => ({ name, values: column(name, pick) }));
  const by = group ? ` per ${group}` : "";
  const charts = [
    { name: "requests", title: `Requests${by}`, fmt: count, series: per((d) => d.request_count.count) },
    { name: "errors", title: `Errors${by}`, fmt: count, series: per((d) => d.failure_request.count) },
    group
      ? { name: "latency", title: `Latency p95${by}`, fmt: ms, series: per((d) => d.latency.p95) }
      : { name: "latency", title: "Latency p50 / p95 / p99", fmt: ms, series: ["p50", "p95", "p99"].map((q) => ({ name: q, values: column("all", (d) => d.latency[q]) })) },
    { name: "ttft", title: `Time to first token p95${by}`, fmt: ms, series: per((d) => d.ttft.p95) },
    group
      ? { name: "tokens", title: `Tokens (input + output)${by}`, fmt: count, series: per((d) => d.input_token.count + d.output_token.count) }
      : { name: "tokens", title: "Tokens", fmt: count, series: [
        { name: "input", values: column("all", (d) => d.input_token.count) },
        { name: "output", values: column("all", (d) => d.output_token.count) }] },
    { name: "cost", title: `Cost${by}`, fmt: usd, series: per((d) => d.cost.total_usd) },
  ];
  return { x, charts };
}

function Controls({ view, loading, onRefresh }) {
  return html`<form class="controls" aria-label="Dashboard settings" onSubmit=${(e) => { e.preventDefault(); onRefresh(); }}>
    <label>Range<select value=${view.range} data-testid="range"
      onChange=${(e) => setParams({ range: e.target.value, freq: "" })}>
      ${RANGES.map((r) => html`<option value=${r}>last ${r}</option>`)}</select></label>
    <label>Frequency<select value=${view.freq} data-testid="frequency" onChange=${(e) => setParams({ freq: e.target.value })}>
      ${FREQUENCIES.map(([f, label]) => html`<option value=${f}>${label}</option>`)}</select></label>
    <label>Group by<select value=${view.group || "none"} data-testid="group-by"
      onChange=${(e) => setParams({ group: e.target.value === "model" ? "" : e.target.value })}>
      ${GROUPS.map(([g, label]) => html`<option value=${g}>${label}</option>`)}</select></label>
    <label>Top groups<input type="number" min="1" max="50" step="1" value=${view.topk} disabled=${!view.group} data-testid="topk"
      onChange=${(e) => { const n = Math.round(Number(e.target.value)); setParams({ topk: n >= 1 && n <= 50 && n !== 5 ? n : "" }); }} /></label>
    <button type="submit" disabled=${loading}>Refresh</button>
  </form>`;
}

export function DashboardPage() {
  const { query } = useLocation();
  const view = viewOf(query);
  const project = projectChoice.value;
  const dark = useColourScheme();
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  const key = `${view.range}|${view.freq}|${view.group}|${view.topk}|${project}|${tick}`;

  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api("/observability/analytics", { method: "POST", body: analyticsBody(view, project), signal: controller.signal })
      .then((data) => setState({ data: { response: data, group: view.group, freq: view.freq, range: view.range }, error: null, loading: false }))
      .catch((error) => { if (error.name !== "AbortError") setState((s) => ({ ...s, error, loading: false })); });
    return () => controller.abort();
  }, [key]);

  const shown = state.data;
  const shaped = useMemo(() => (shown ? shape(shown.response, shown.group) : null), [shown]);
  const built = useMemo(() => (shaped ? chartsOf(shaped, shown.group) : null), [shaped]);
  const nothing = shaped && !shaped.summary.some((g) => g.data.request_count?.count);

  return html`<section class="page dashboard">
    <div class="titlebar"><h1>Dashboard</h1>
      <span class="muted" data-testid="dashboard-scope">${project ? `project ${project}` : "all projects"} · last ${view.range}</span>
      ${state.loading && html`<span class="muted" aria-live="polite">loading…</span>`}
    </div>
    <${Controls} view=${view} loading=${state.loading} onRefresh=${() => setTick((n) => n + 1)} />
    <${ErrorBox} error=${state.error} />
    ${nothing && html`<p class="empty" data-testid="dashboard-empty">No inference in the last ${shown.range}${project ? ` for project ${project}` : ""}. Widen the range or pick another project.</p>`}
    ${shaped && !nothing && html`<${Tiles} summary=${shaped.summary} range=${shown.range} group=${shown.group} />`}
    ${built && !nothing && html`<div class="charts">
      ${built.charts.map((c) => html`<${Chart} key=${c.name} name=${c.name} title=${c.title} x=${built.x} series=${c.series} fmt=${c.fmt} freq=${shown.freq} dark=${dark} />`)}
    </div>`}
  </section>`;
}
