// Settings: API keys (admins) and the gateway's own state (GET /api/v1/status).
import { html, useState, api, useApi, auth, ErrorBox, Copy } from "../lib/ui.js";
import { count, pct, time, ago } from "../lib/format.js";

const ROLES = ["viewer", "editor", "admin"];

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(value >= 100 ? 0 : 1) : value} ${units[unit]}`;
}

function projectsText(projects) {
  return projects && projects.length ? projects.join(", ") : "every project";
}

function KeyRow({ k, me, onRevoke, busy, tracksUse }) {
  const lastUsed = k.last_used_at || k.last_used;
  const mine = me.key_id && me.key_id === k.key_id;
  return html`<tr data-testid="key-row" data-key-id=${k.key_id} class=${k.revoked ? "revoked" : ""}>
    <td>${k.name || html`<span class="muted">(no name)</span>`}${mine ? html` <span class="badge">this session</span>` : ""}</td>
    <td><code>${k.key_id}</code></td>
    <td>${k.role}</td>
    <td class=${k.projects && k.projects.length ? "" : "muted"}>${projectsText(k.projects)}</td>
    <td>${k.ingest ? "yes" : "no"}</td>
    <td title=${k.created_at}>${time(k.created_at)}</td>
    ${tracksUse && html`<td title=${lastUsed || ""}>${lastUsed ? ago(lastUsed) : "never"}</td>`}
    <td>${k.revoked ? html`<span class="bad">revoked</span>` : html`<button type="button" class="danger" disabled=${busy}
      onClick=${() => onRevoke(k)} data-testid="revoke-key" aria-label=${`Revoke key ${k.name || k.key_id}`}>Revoke</button>`}</td>
  </tr>`;
}

function KeyTable({ keys, me, onChanged }) {
  const [showRevoked, setShowRevoked] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const revoked = keys.filter((k) => k.revoked).length;
  const shown = keys.filter((k) => showRevoked || !k.revoked).slice().reverse(); // newest first
  const tracksUse = keys.some((k) => "last_used_at" in k || "last_used" in k);
  const revoke = async (k) => {
    const mine = me.key_id && me.key_id === k.key_id;
    const question = `Revoke the key ${k.name ? `"${k.name}" ` : ""}(${k.key_id})? Anything using it stops working at once.` +
      (mine ? "\n\nThis is the key you are signed in with: you will be signed out." : "");
    if (!confirm(question)) return;
    setBusy(true);
    try {
      await api(`/api/v1/keys/${encodeURIComponent(k.key_id)}`, { method: "DELETE" });
      setError(null);
      onChanged();
    } catch (e) { setError(e); } finally { setBusy(false); }
  };
  return html`<div>
    ${keys.length > 0 && html`<div class="titlebar"><span class="muted" data-testid="key-count">${keys.length - revoked} active${revoked ? `, ${revoked} revoked` : ""}</span>
      ${revoked > 0 && html`<label class="toggle"><input type="checkbox" checked=${showRevoked} onChange=${(e) => setShowRevoked(e.target.checked)} /> Show revoked</label>`}
    </div>`}
    <${ErrorBox} error=${error} />
    ${shown.length ? html`<div class="table-wrap"><table class="grid keys" data-testid="key-table">
      <thead><tr><th scope="col">Name</th><th scope="col">Key id</th><th scope="col">Role</th><th scope="col">Projects</th>
        <th scope="col">Ingest</th><th scope="col">Created</th>${tracksUse && html`<th scope="col">Last used</th>`}<th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${shown.map((k) => html`<${KeyRow} key=${k.key_id} k=${k} me=${me} onRevoke=${revoke} busy=${busy} tracksUse=${tracksUse} />`)}</tbody>
    </table></div>` : html`<p class="empty">No ${revoked ? "active " : ""}API key yet. Without keys the API is open on loopback only; create one below.</p>`}
  </div>`;
}

// While the gateway has no key (me.anonymous), the first one switches authentication on: from
// then on this tab's requests are refused until it signs in, so nothing is reloaded after it.
function CreateKey({ me, onCreated }) {
  const limited = Array.isArray(me.projects);
  const first = me.anonymous;
  const [name, setName] = useState("");
  const [role, setRole] = useState(first ? "admin" : "viewer");
  const [projectText, setProjectText] = useState("");
  const [picked, setPicked] = useState(() => (limited && me.projects.length === 1 ? [...me.projects] : []));
  const [ingest, setIngest] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [secret, setSecret] = useState(null);

  const submit = async (event) => {
    event.preventDefault();
    const projects = limited ? picked : [...new Set(projectText.split(",").map((p) => p.trim()).filter(Boolean))];
    if (limited && !projects.length) { setError(new Error("Pick at least one project: your key covers only some projects.")); return; }
    setBusy(true);
    try {
      const created = await api("/api/v1/keys", { method: "POST", body: { name: name.trim(), role, projects, ingest } });
      const { key, ...record } = created;
      setSecret({ key, id: record.key_id, name: record.name, first });
      setName(""); setProjectText(""); setIngest(false); setError(null);
      onCreated(record);
    } catch (e) { setError(e); } finally { setBusy(false); }
  };
  const toggle = (project, on) => setPicked(on ? [...picked, project] : picked.filter((p) => p !== project));

  return html`<div>
    ${secret && html`<div class="secret-box" role="status" data-testid="new-key-box">
      <strong>New key${secret.name ? ` "${secret.name}"` : ""} (${secret.id})</strong>
      <div class="secret-line"><code data-testid="new-key-secret">${secret.key}</code> <${Copy} text=${secret.key} label="the new key" /></div>
      <p>Copy it now and keep it somewhere safe: only its hash is stored, so it will not be shown again.</p>
      ${secret.first && html`<p><strong>This gateway now requires an API key</strong>: this tab will be asked for one on its next request.</p>`}
      <div class="secret-actions">
        <button type="button" onClick=${() => setSecret(null)}>I have copied it</button>
        ${secret.first && html`<button type="button" onClick=${() => { auth.key = secret.key; location.reload(); }} data-testid="sign-in-new-key">Sign in with this key</button>`}
      </div>
    </div>`}
    <form class="create-key" onSubmit=${submit} data-testid="create-key-form" aria-label="Create an API key">
      <h3>Create a key</h3>
      ${first && html`<p class="hint" data-testid="first-key-note">No key exists yet, so the API is open on this address. The first key switches authentication on for the query API (and an ingest key for OTLP): make it an admin and sign in with it.</p>`}
      <label>Name<input name="name" value=${name} onInput=${(e) => setName(e.target.value)} placeholder="e.g. ci-ingest" maxlength="200" /></label>
      <label>Role<select name="role" value=${role} onChange=${(e) => setRole(e.target.value)}>
        ${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
      ${limited
        ? html`<fieldset><legend>Projects</legend>
            ${me.projects.map((p) => html`<label class="check"><input type="checkbox" name="projects" value=${p} checked=${picked.includes(p)}
              onChange=${(e) => toggle(p, e.target.checked)} /> ${p}</label>`)}
            <p class="hint muted">Your key covers these projects only, so a new key can cover some of them.</p></fieldset>`
        : html`<label>Projects<input name="projects" value=${projectText} onInput=${(e) => setProjectText(e.target.value)}
            placeholder="every project" aria-describedby="projects-hint" />
            <span id="projects-hint" class="hint">Comma separated; empty: every project.</span></label>`}
      <label class="check"><input type="checkbox" name="ingest" checked=${ingest} onChange=${(e) => setIngest(e.target.checked)} />
        Ingest (may send OTLP; once one ingest key exists, OTLP needs one)</label>
      <div><button type="submit" disabled=${busy}>Create key</button></div>
      <${ErrorBox} error=${error} />
    </form>
  </div>`;
}

function Keys({ me }) {
  const { data, error, loading, reload } = useApi("/api/v1/keys");
  const [added, setAdded] = useState([]); // created while the gateway was open (see CreateKey)
  const onCreated = (record) => { if (me.anonymous) setAdded((list) => [...list, record]); else reload(); };
  const keys = data ? [...data.keys, ...added.filter((a) => !data.keys.some((k) => k.key_id === a.key_id))] : null;
  return html`<div class="keys-section">
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<p class="muted">Loading keys…</p>` : keys && html`<${KeyTable} keys=${keys} me=${me} onChanged=${reload} />`}
    <${CreateKey} me=${me} onCreated=${onCreated} />
  </div>`;
}

function Item({ label, children, testid }) {
  return html`<div class="field" data-testid=${testid}><dt>${label}</dt><dd>${children}</dd></div>`;
}

function Gateway() {
  const { data, error, loading, reload } = useApi("/api/v1/status");
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<p class="muted">Loading status…</p>`;
  const pipeline = data.pipeline || {};
  const wal = pipeline.wal || {};
  const writer = data.writer || {};
  const sampler = pipeline.sampler;
  const rows = writer.rows_written || {};
  const refused = Object.values(pipeline.refused || {}).reduce((t, n) => t + n, 0);
  const walShare = wal.max_bytes ? (wal.bytes / wal.max_bytes) * 100 : null;
  const kept = sampler ? sampler.traces_kept : 0;
  const dropped = sampler ? sampler.traces_dropped : 0;
  return html`<div data-testid="gateway-status">
    <div class="titlebar"><span class="muted">Counters since this process started.</span>
      <button type="button" onClick=${reload} disabled=${loading}>Refresh</button></div>
    <dl class="overview">
      <${Item} label="Write-ahead log" testid="status-wal">
        <meter min="0" max=${wal.max_bytes || 1} value=${wal.bytes || 0} high=${(wal.max_bytes || 1) * 0.8}
          aria-label="Write-ahead log use">${pct(walShare)}</meter>
        <div>${bytes(wal.bytes)} of ${bytes(wal.max_bytes)} (${pct(walShare)})</div>
        <div class="muted">${count(wal.pending_records)} records pending · ${count(wal.segments)} segments${pipeline.writer_lag_s ? ` · lag ${pipeline.writer_lag_s} s` : ""}</div>
      <//>
      <${Item} label="Writer" testid="status-writer">
        ${writer.healthy ? html`<span class="ok">healthy</span>` : html`<span class="bad">unhealthy</span>`}
        <div class="muted">${count(writer.flushes)} flushes · ${count(writer.insert_errors)} insert errors · ${count(writer.dead_letter_rows)} dead-letter rows</div>
        ${writer.last_error && html`<div class="bad wrap">${writer.last_error}</div>`}
      <//>
      <${Item} label="Rows written" testid="status-rows">
        <ul class="plain">${Object.entries(rows).map(([table, n]) => html`<li><span>${table.replace(/_/g, " ")}</span> <strong>${count(n)}</strong></li>`)}</ul>
      <//>
      <${Item} label="Tail sampler" testid="status-sampler">
        ${sampler
          ? html`<div>${count(kept)} traces kept · ${count(dropped)} dropped${kept + dropped ? ` (${pct((dropped / (kept + dropped)) * 100)} dropped)` : ""}</div>
              <div class="muted">${count(sampler.buffered_traces)} traces buffered (${bytes(sampler.buffered_bytes)})</div>`
          : html`<span class="muted">off: every trace is kept</span>`}
      <//>
      <${Item} label="Intake" testid="status-intake">
        <div>${Object.entries(pipeline.items_accepted || {}).map(([signal, n]) => `${count(n)} ${signal}`).join(" · ")} accepted</div>
        <div class=${refused ? "bad" : "muted"}>${count(refused)} requests refused (rate limit, full log, overload)</div>
      <//>
    </dl>
    <${Masking} masking=${pipeline.masking || {}} />
  </div>`;
}

function Masking({ masking }) {
  const rows = Object.entries(masking).flatMap(([project, detectors]) => Object.entries(detectors).map(([d, n]) => [project, d, n]));
  return html`<div data-testid="masking-status"><h2>Masking</h2>
    <p class="muted">Secrets are always masked at ingest; PII and the content capture policy are set per project (docs/privacy.md).</p>
    ${rows.length ? html`<table class="grid"><thead><tr><th>Project</th><th>Detector</th><th class="num">Values masked</th></tr></thead>
      <tbody>${rows.map(([p, d, n]) => html`<tr><td>${p}</td><td>${d}</td><td class="num">${count(n)}</td></tr>`)}</tbody></table>`
      : html`<p class="empty">Nothing masked since this process started.</p>`}</div>`;
}

function Retention() {
  const { data, error } = useApi("/api/v1/retention");
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<p class="boot">Loading…</p>`;
  const row = (name, p) => html`<tr><td>${name}</td><td class="num">${p.content_days} d</td><td class="num">${p.spans_days} d</td><td class="num">${p.numbers_days} d</td></tr>`;
  return html`<div data-testid="retention"><p class="muted">Change with <code>otelgw retention set</code> or <code>PUT /api/v1/retention</code>.</p>
    <table class="grid"><thead><tr><th>Project</th><th class="num">Content</th><th class="num">Span detail</th><th class="num">Numbers</th></tr></thead>
    <tbody>${row("defaults", data.defaults)}${(data.projects || []).map((p) => row(p.project_id || p.project, p))}</tbody></table></div>`;
}

export function SettingsPage({ me }) {
  return html`<section class="page settings">
    <div class="titlebar"><h1>Settings</h1></div>
    <h2>API keys</h2>
    ${me.role === "admin"
      ? html`<${Keys} me=${me} />`
      : html`<p class="note" data-testid="keys-admin-only">Only admins manage API keys; this key's role is ${me.role}. Ask an admin for a new key.</p>`}
    <h2>Retention</h2>
    ${me.role === "admin" ? html`<${Retention} />` : html`<p class="muted">Admins see and change retention.</p>`}
    <h2>Gateway</h2>
    <${Gateway} />
  </section>`;
}
