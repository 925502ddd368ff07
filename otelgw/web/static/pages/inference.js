// Inference detail: overview, conversation, timing waterfall, raw spans, feedback.
import { html, useState, Link, api, useApi, ErrorBox, Copy, JsonView } from "../lib/ui.js";
import { Markdown } from "../lib/markdown.js";
import { count, ms, usd, time } from "../lib/format.js";

const PHASE_LABELS = { request_received: "Received", forwarded_to_provider: "Forwarded", first_token: "First token", complete: "Complete" };
const LONG = 1500;

function Field({ label, children, copy }) {
  return html`<div class="field"><dt>${label}</dt><dd>${children}${copy ? html` <${Copy} text=${copy} label=${label} />` : ""}</dd></div>`;
}

function Overview({ o, perf }) {
  const model = o.response_model && o.response_model !== o.request_model ? `${o.request_model} → ${o.response_model}` : (o.response_model || o.request_model);
  return html`<dl class="overview">
    <${Field} label="Model">${model || "–"}<//>
    <${Field} label="Provider">${o.provider || "–"}<//>
    <${Field} label="Status">${o.is_success ? html`<span class="ok">success</span>` : html`<span class="bad">${o.error_type || "error"}</span>`}<//>
    <${Field} label="Tokens">${count(o.input_tokens)} in · ${count(o.output_tokens)} out${o.cached_input_tokens ? ` · ${count(o.cached_input_tokens)} cached` : ""}${o.cache_write_input_tokens ? ` · ${count(o.cache_write_input_tokens)} written to cache` : ""}${o.reasoning_tokens ? ` · ${count(o.reasoning_tokens)} reasoning` : ""}<//>
    <${Field} label="Cost">${usd(o.cost_usd)}${o.cost_source ? html` <span class="muted">(${o.cost_source})</span>` : ""}<//>
    <${Field} label="Latency">${ms(o.latency_ms)}<//>
    <${Field} label="TTFT">${ms(o.ttft_ms)}${o.ttft_source ? html` <span class="muted">(${o.ttft_source})</span>` : ""}<//>
    <${Field} label="Throughput">${perf.tokens_per_second ? `${count(perf.tokens_per_second)} tok/s` : "–"}<//>
    <${Field} label="Finish reason">${o.finish_reason || "–"}<//>
    <${Field} label="Streaming">${o.is_streaming ? "yes" : "no"}<//>
    <${Field} label="Session">${o.session_id ? html`<${Link} href=${`/sessions/${encodeURIComponent(o.session_id)}`}>${o.session_id}<//>` : "–"}<//>
    <${Field} label="User">${o.user_id || "–"}<//>
    <${Field} label="Time">${time(o.timestamp)}<//>
    <${Field} label="Service">${o.service_name} <span class="muted">${o.span_name}</span><//>
    <${Field} label="Inference id" copy=${o.inference_id}><code>${o.inference_id}</code><//>
    ${o.trace_id ? html`<${Field} label="Trace id" copy=${o.trace_id}><${Link} href=${`/traces/${o.trace_id}`}><code>${o.trace_id}</code><//><//>
    <${Field} label="Span id" copy=${o.span_id}><code>${o.span_id}</code><//>` : html`<${Field} label="Trace">– <span class="muted">(said by a log record)</span><//>`}
    ${o.response_id && html`<${Field} label="Response id" copy=${o.response_id}><code>${o.response_id}</code><//>`}
    <${Field} label="Project">${o.project_id}<//>
  </dl>`;
}

function Content({ text }) {
  const [open, setOpen] = useState(false);
  if (!text) return null;
  if (text.length <= LONG || open) {
    return html`<div><${Markdown} text=${text} />${text.length > LONG && html`<button type="button" class="link" onClick=${() => setOpen(false)}>Show less</button>`}</div>`;
  }
  return html`<div><${Markdown} text=${text.slice(0, LONG) + "…"} /><button type="button" class="link" onClick=${() => setOpen(true)}>Show all (${count(text.length)} characters)</button></div>`;
}

function pretty(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try { return JSON.stringify(JSON.parse(value), null, 2); } catch (_) { return value; }
}

function ToolCalls({ calls }) {
  if (!calls || !calls.length) return null;
  return html`<div class="tools">${calls.map((call) => {
    const fn = call.function || call;
    return html`<div class="tool-call"><div class="tool-name">→ ${fn.name || call.name || "tool"}${call.id ? html` <span class="muted">${call.id}</span>` : ""}</div>
      <pre>${pretty(fn.arguments ?? call.arguments ?? call.input ?? "")}</pre></div>`;
  })}</div>`;
}

export function Conversation({ messages }) {
  if (!messages.length) return html`<p class="empty">No message content was captured (many instrumentations leave it out unless content capture is on).</p>`;
  return html`<ol class="conversation">${messages.map((m) => html`
    <li class=${`message role-${m.role}`} data-testid="message" data-role=${m.role}>
      <div class="role">${m.role}${m.name ? ` · ${m.name}` : ""}${m.tool_call_id ? html` <span class="muted">for ${m.tool_call_id}</span>` : ""}${m.finish_reason ? html` <span class="muted">(${m.finish_reason})</span>` : ""}</div>
      <${Content} text=${m.content} />
      <${ToolCalls} calls=${m.tool_calls} />
    </li>`)}</ol>`;
}

// Horizontal bars on one time axis; p50/p95 of this model marked on the axis.
export function Waterfall({ perf }) {
  const total = Math.max(perf.total_ms, 0.001);
  const base = perf.model_baseline || {};
  const marks = [["p50", base.latency_p50_ms], ["p95", base.latency_p95_ms]].filter(([, v]) => v);
  const scale = Math.max(total, ...marks.map(([, v]) => v));
  const pctOf = (v) => `${Math.min(100, (v / scale) * 100).toFixed(2)}%`;
  const bars = perf.phases.filter((p) => p.name !== "complete");
  const extra = [["queue", perf.queue_ms], ["prefill", perf.prefill_ms], ["decode", perf.decode_ms]].filter(([, v]) => v !== null && v !== undefined);
  return html`<div class="waterfall" data-testid="waterfall" role="img" aria-label=${`Timing: total ${ms(total)}`}>
    ${bars.map((p) => html`<div class="wf-row" data-phase=${p.name}>
      <div class="wf-label">${PHASE_LABELS[p.name] || p.name}</div>
      <div class="wf-track"><div class=${`wf-bar phase-${p.name}`} style=${{ left: pctOf(p.offset_ms), width: `max(2px, ${pctOf(p.duration_ms || 0)})` }}
        title=${`${PHASE_LABELS[p.name] || p.name}: starts at ${ms(p.offset_ms)}, lasts ${ms(p.duration_ms)} — source: ${p.source}`}></div></div>
      <div class="wf-value">${ms(p.duration_ms)}</div></div>`)}
    <div class="wf-row wf-total"><div class="wf-label">Total</div>
      <div class="wf-track"><div class="wf-bar phase-total" style=${{ left: "0%", width: pctOf(total) }} title=${`complete at ${ms(total)}`}></div>
        ${marks.map(([name, v]) => html`<div class="wf-mark" style=${{ left: pctOf(v) }} title=${`${name} of this model over ${base.window_hours} h: ${ms(v)}`}><span>${name}</span></div>`)}</div>
      <div class="wf-value">${ms(total)}</div></div>
    ${extra.length ? html`<p class="muted">Server: ${extra.map(([k, v]) => `${k} ${ms(v)}`).join(" · ")}</p>` : ""}
    <p class="muted">TTFT ${ms(perf.ttft_ms)}${perf.ttft_source ? ` (${perf.ttft_source})` : ""} · this model, last ${base.window_hours} h (${count(base.samples)} calls): latency p50 ${ms(base.latency_p50_ms)}, p95 ${ms(base.latency_p95_ms)}; TTFT p50 ${ms(base.ttft_p50_ms)}, p95 ${ms(base.ttft_p95_ms)}</p>
  </div>`;
}

function FeedbackForm({ id, onSaved }) {
  const [type, setType] = useState("boolean");
  const [value, setValue] = useState("true");
  const [comment, setComment] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    const body = { type, comment };
    if (type === "boolean") body.value = value === "true";
    else if (type === "rating") body.value = Number(value);
    else if (type === "demonstration") body.value = value;
    try { await api(`/api/v1/metrics/inferences/${id}/feedback`, { method: "POST", body }); setComment(""); setError(null); onSaved(); }
    catch (e) { setError(e); }
    setBusy(false);
  };
  return html`<form class="feedback-form" onSubmit=${submit} data-testid="feedback-form">
    <label>Kind<select value=${type} onChange=${(e) => { setType(e.target.value); setValue(e.target.value === "rating" ? "5" : e.target.value === "boolean" ? "true" : ""); }} name="type">
      <option value="boolean">thumbs</option><option value="rating">rating 1–5</option><option value="comment">comment</option><option value="demonstration">corrected response</option></select></label>
    ${type === "boolean" && html`<fieldset class="thumbs"><legend>Verdict</legend>
      <label><input type="radio" name="thumb" value="true" checked=${value === "true"} onChange=${() => setValue("true")} /> 👍 good</label>
      <label><input type="radio" name="thumb" value="false" checked=${value === "false"} onChange=${() => setValue("false")} /> 👎 bad</label></fieldset>`}
    ${type === "rating" && html`<label>Rating<select value=${value} onChange=${(e) => setValue(e.target.value)} name="rating">${[1, 2, 3, 4, 5].map((n) => html`<option value=${String(n)}>${n}</option>`)}</select></label>`}
    ${type === "demonstration" && html`<label>Corrected response<textarea name="demonstration" rows="4" value=${value} onInput=${(e) => setValue(e.target.value)} required></textarea></label>`}
    <label>Comment<textarea name="comment" rows="2" value=${comment} onInput=${(e) => setComment(e.target.value)} required=${type === "comment"}></textarea></label>
    <button type="submit" disabled=${busy}>Add feedback</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

// `where` (optional) renders what an item is attached to, in front of its source line.
export function FeedbackList({ feedback, where, testid = "feedback" }) {
  if (!feedback.items.length) return html`<p class="empty">No feedback yet.</p>`;
  return html`<ul class="feedback-list" data-testid=${`${testid}-list`}>${feedback.items.map((f) => html`
    <li data-testid=${`${testid}-item`} data-span-id=${f.span_id}><strong>${f.kind}${f.name && f.name !== f.kind ? ` · ${f.name}` : ""}</strong>
      ${f.value !== null && html` <span>${f.kind === "boolean" ? (f.value > 0 ? "👍" : "👎") : f.value}</span>`}
      ${f.label && html` <span>${f.label}</span>`}
      ${f.comment && html`<div class="comment">${f.comment}</div>`}
      <div class="muted">${where ? html`${where(f)} · ` : ""}${f.source}${f.created_by ? ` · ${f.created_by}` : ""} · ${time(f.timestamp)}</div></li>`)}</ul>`;
}

export function InferencePage({ params }) {
  const [id] = params;
  const [tab, setTab] = useState("conversation");
  const { data, error, loading, reload } = useApi(`/api/v1/metrics/inferences/${encodeURIComponent(id)}`);
  if (error) return html`<section class="page"><h1>Inference</h1><${ErrorBox} error=${error} /><${Link} href="/">← all inferences<//></section>`;
  if (loading && !data) return html`<p class="boot">Loading…</p>`;
  const o = data.overview;
  const tabs = [["conversation", "Conversation"], ["raw", "Raw spans"], ["feedback", `Feedback (${data.feedback.items.length})`]];
  const onKey = (event) => {
    const index = tabs.findIndex(([k]) => k === tab);
    if (event.key === "ArrowRight") setTab(tabs[(index + 1) % tabs.length][0]);
    if (event.key === "ArrowLeft") setTab(tabs[(index + tabs.length - 1) % tabs.length][0]);
  };
  return html`<section class="page inference">
    <div class="titlebar"><${Link} href="/">← Inferences<//><h1>${o.response_model || o.request_model || o.span_name}</h1>
      <span class=${o.is_success ? "ok" : "bad"}>${o.is_success ? "success" : "error"}</span>
      <div class="spacer"></div>${o.trace_id && html`<${Link} href=${`/traces/${o.trace_id}`} class="button">Full trace →<//>`}</div>
    <${Overview} o=${o} perf=${data.performance} />
    ${o.error_message && html`<pre class="error" data-testid="error-message">${o.error_message}</pre>`}
    <h2>Where the time went</h2>
    <${Waterfall} perf=${data.performance} />
    <div role="tablist" class="tabs" aria-label="Inference" onKeyDown=${onKey}>
      ${tabs.map(([key, label]) => html`<button type="button" role="tab" id=${`tab-${key}`} aria-selected=${tab === key} aria-controls=${`panel-${key}`}
        tabindex=${tab === key ? 0 : -1} onClick=${() => setTab(key)} data-testid=${`tab-${key}`}>${label}</button>`)}
    </div>
    <div role="tabpanel" id=${`panel-${tab}`} aria-labelledby=${`tab-${tab}`} class="panel">
      ${tab === "conversation" && html`<${Conversation} messages=${data.messages} />`}
      ${tab === "raw" && html`<div>${data.raw.spans.map((s, i) => html`<${JsonView} value=${s} open=${i === 0} label=${`span ${s.name || ""} ${s.spanId || ""}`} />`)}
        ${data.raw.log_events.length ? html`<${JsonView} value=${data.raw.log_events} label="log-record events" />` : ""}
        ${!o.trace_kept && html`<p class="muted">${o.trace_id ? "The trace's other spans were sampled out; the inference row keeps everything shown here."
          : "A log record said this call (no span): the inference row keeps everything shown here, the record is in the logs table."}</p>`}</div>`}
      ${tab === "feedback" && html`<div class="two-col"><${FeedbackList} feedback=${data.feedback} /><${FeedbackForm} id=${id} onSaved=${reload} /></div>`}
    </div>
  </section>`;
}
