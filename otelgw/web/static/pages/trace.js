// Trace view: the span tree with a timeline, from the Tempo v2 trace API; the trace's feedback;
// TraceQL search.
import { html, useState, useEffect, Link, navigate, api, useApi, ErrorBox, Copy } from "../lib/ui.js";
import { ms, time } from "../lib/format.js";
import { FeedbackList } from "./inference.js";

const GENAI = /^(gen_ai\.|llm\.|ai\.|langfuse\.observation|traceloop\.)/;

function hex(b64) {
  if (!b64) return "";
  try { return Array.from(atob(b64), (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join(""); } catch (_) { return b64; }
}
function anyValue(v) {
  if (!v) return "";
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return String(v.intValue);
  if ("doubleValue" in v) return String(v.doubleValue);
  if ("boolValue" in v) return String(v.boolValue);
  if ("arrayValue" in v) return JSON.stringify((v.arrayValue.values || []).map(anyValue));
  if ("kvlistValue" in v) return JSON.stringify(Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, anyValue(kv.value)])));
  if ("bytesValue" in v) return v.bytesValue;
  return "";
}

// Flatten OTLP JSON into spans with depth, ordered as a tree (children by start time).
export function flatten(trace) {
  const spans = [];
  for (const rs of trace.resourceSpans || []) {
    const resource = Object.fromEntries((rs.resource?.attributes || []).map((kv) => [kv.key, anyValue(kv.value)]));
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        const attributes = Object.fromEntries((s.attributes || []).map((kv) => [kv.key, anyValue(kv.value)]));
        spans.push({
          id: hex(s.spanId), parent: hex(s.parentSpanId), name: s.name,
          kind: String(s.kind || "SPAN_KIND_UNSPECIFIED").replace("SPAN_KIND_", "").toLowerCase(),
          start: Number(BigInt(s.startTimeUnixNano || 0) / 1000n) / 1000, end: Number(BigInt(s.endTimeUnixNano || 0) / 1000n) / 1000,
          status: s.status?.code === "STATUS_CODE_ERROR" || s.status?.code === 2 ? "error" : "ok", statusMessage: s.status?.message || "",
          attributes, resource, service: resource["service.name"] || "", scope: ss.scope?.name || "", events: s.events || [],
          genai: Object.keys(attributes).some((k) => GENAI.test(k)) || "otelgw.inference_id" in attributes,
        });
      }
    }
  }
  const byId = new Map(spans.map((s) => [s.id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent && byId.has(s.parent)) (children.get(s.parent) || children.set(s.parent, []).get(s.parent)).push(s);
    else roots.push(s);
  }
  const ordered = [];
  const walk = (s, depth) => {
    ordered.push({ ...s, depth });
    (children.get(s.id) || []).sort((a, b) => a.start - b.start).forEach((c) => walk(c, depth + 1));
  };
  roots.sort((a, b) => a.start - b.start).forEach((r) => walk(r, 0));
  return ordered;
}

function SpanDetail({ span }) {
  if (!span) return html`<p class="muted">Select a span to see its attributes.</p>`;
  const inference = span.attributes["otelgw.inference_id"];
  return html`<div class="span-detail" data-testid="span-detail">
    <h2>${span.name}</h2>
    <p class="muted">${span.service} · ${span.kind} · ${ms(span.end - span.start)} · span <code>${span.id}</code> <${Copy} text=${span.id} label="span id" />
      ${span.status === "error" ? html` · <span class="bad">error</span> ${span.statusMessage}` : ""}</p>
    ${inference && html`<p><${Link} href=${`/inferences/${inference}`}>Open the inference →<//></p>`}
    <table class="grid attrs"><tbody>
      ${Object.entries(span.attributes).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => html`<tr><th scope="row">${k}</th><td><pre>${v}</pre></td></tr>`)}
    </tbody></table>
    ${span.events.length ? html`<h2>Events</h2><ul>${span.events.map((e) => html`<li><strong>${e.name}</strong> <span class="muted">${(e.attributes || []).map((kv) => `${kv.key}=${anyValue(kv.value)}`).join(" ")}</span></li>`)}</ul>` : ""}
  </div>`;
}

function TraceSearch({ initial }) {
  const [q, setQ] = useState(initial || "{ }");
  const [results, setResults] = useState(null);
  const [error, setError] = useState(null);
  const run = async (event) => {
    event?.preventDefault();
    try {
      const end = Math.floor(Date.now() / 1000);
      const data = await api(`/api/search?${new URLSearchParams({ q, start: String(end - 7 * 86400), end: String(end), limit: "50" })}`);
      setResults(data.traces || []); setError(null);
    } catch (e) { setError(e); }
  };
  return html`<div class="trace-search">
    <form onSubmit=${run} class="controls" role="search">
      <label>TraceQL<input value=${q} onInput=${(e) => setQ(e.target.value)} size="60" data-testid="traceql" /></label>
      <button type="submit">Search (7 days)</button></form>
    <${ErrorBox} error=${error} />
    ${results && html`<table class="grid"><thead><tr><th>Trace</th><th>Root</th><th>Start</th><th class="num">Duration</th></tr></thead><tbody>
      ${results.map((t) => html`<tr tabindex="0" onClick=${() => navigate(`/traces/${t.traceID}`)} onKeyDown=${(e) => { if (e.key === "Enter") navigate(`/traces/${t.traceID}`); }}>
        <td><code>${t.traceID}</code></td><td>${t.rootServiceName} ${t.rootTraceName}</td>
        <td>${time(new Date(Number(BigInt(t.startTimeUnixNano || 0) / 1000000n)).toISOString())}</td><td class="num">${ms(t.durationMs)}</td></tr>`)}
      </tbody></table>`}
    ${results && !results.length && html`<p class="empty">No trace matches.</p>`}
  </div>`;
}

// Feedback on any span of the trace: evaluations of agent and tool spans are only here.
function TraceFeedback({ feedback, spans, pick }) {
  if (!feedback || !feedback.items.length) return "";
  const byId = new Map(spans.map((s) => [s.id, s]));
  const where = (f) => html`${byId.has(f.span_id)
    ? html`<button class="link" onClick=${() => pick(byId.get(f.span_id))}>${byId.get(f.span_id).name}</button>`
    : html`span <code>${f.span_id}</code>`}${f.inference_id ? html` · <${Link} href=${`/inferences/${f.inference_id}`}>inference<//>` : ""}`;
  return html`<h2>Feedback (${feedback.items.length}${feedback.has_more ? "+" : ""})</h2>
    <${FeedbackList} feedback=${feedback} where=${where} testid="trace-feedback" />`;
}

export function TracePage({ params }) {
  const [traceId] = params;
  const { data, error } = useApi(`/api/v2/traces/${encodeURIComponent(traceId)}`);
  const { data: feedback } = useApi(`/api/v1/traces/${encodeURIComponent(traceId)}/feedback`);
  const [selected, setSelected] = useState(null);
  useEffect(() => setSelected(null), [traceId]);
  if (error) return html`<section class="page"><h1>Trace <code>${traceId}</code></h1><${ErrorBox} error=${error} /><${TraceSearch} /></section>`;
  if (!data) return html`<p class="boot">Loading…</p>`;
  const spans = flatten(data.trace || {});
  const start = Math.min(...spans.map((s) => s.start));
  const end = Math.max(...spans.map((s) => s.end));
  const total = Math.max(end - start, 0.001);
  const pick = (s) => setSelected(s.id);
  return html`<section class="page trace">
    <div class="titlebar"><h1>Trace</h1><code>${traceId}</code><${Copy} text=${traceId} label="trace id" />
      <span class="muted">${spans.length} spans · ${ms(total)} · ${time(new Date(start).toISOString())}</span></div>
    ${data.message && html`<p class="note" data-testid="sampled-out">Sampled out: ${data.message}. Only the inference spans remain; their inference rows are complete.</p>`}
    ${data.status === "PARTIAL" && html`<p class="note">Part of this trace is in projects your key cannot see.</p>`}
    <div class="two-col">
      <div class="trace-grid" role="tree" aria-label="Spans">
        ${spans.map((s) => html`<div role="treeitem" aria-level=${s.depth + 1} aria-selected=${selected === s.id} tabindex="0"
            class=${`span-row${s.genai ? " genai" : ""}${s.status === "error" ? " error" : ""}${selected === s.id ? " selected" : ""}`}
            data-testid="trace-span" data-span-id=${s.id} onClick=${() => pick(s)} onKeyDown=${(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(s); } }}>
          <div class="name" style=${{ paddingLeft: `${s.depth * 14}px` }} title=${`${s.service} · ${s.name}`}>${s.genai ? "◆ " : ""}${s.name} <span class="muted">${s.service}</span></div>
          <div class="gantt"><div style=${{ left: `${((s.start - start) / total) * 100}%`, width: `${Math.max(((s.end - s.start) / total) * 100, 0.2)}%` }}></div></div>
          <div class="num muted">${ms(s.end - s.start)}</div>
        </div>`)}
      </div>
      <${SpanDetail} span=${spans.find((s) => s.id === selected)} />
    </div>
    <${TraceFeedback} feedback=${feedback} spans=${spans} pick=${pick} />
    <h2>Search traces</h2>
    <${TraceSearch} />
  </section>`;
}
