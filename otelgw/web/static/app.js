// The otelgw UI: a shell (navigation, login, project picker) around one page per path.
import { html, render, useState, useEffect, useLocation, Link, api, auth, projectChoice, ErrorBox } from "./lib/ui.js";
import { InferencesPage } from "./pages/inferences.js";

const PAGES = [
  { match: /^\/$/, load: async () => InferencesPage, component: InferencesPage },
  { match: /^\/inferences\/([^/]+)$/, load: async () => (await import("./pages/inference.js")).InferencePage },
  { match: /^\/traces\/([^/]+)$/, load: async () => (await import("./pages/trace.js")).TracePage },
  { match: /^\/sessions$/, load: async () => (await import("./pages/sessions.js")).SessionsPage },
  { match: /^\/sessions\/([^/]+)$/, load: async () => (await import("./pages/sessions.js")).SessionPage },
  { match: /^\/dashboard$/, load: async () => (await import("./pages/dashboard.js")).DashboardPage },
  { match: /^\/settings$/, load: async () => (await import("./pages/settings.js")).SettingsPage },
];
const NAV = [["/", "Inferences"], ["/sessions", "Sessions"], ["/dashboard", "Dashboard"], ["/settings", "Settings"]];

function Login({ onDone, error }) {
  const [key, setKey] = useState("");
  const [problem, setProblem] = useState(error || "");
  const submit = async (event) => {
    event.preventDefault();
    auth.key = key.trim();
    try {
      await api("/api/v1/whoami");
      onDone();
    } catch (e) {
      auth.key = "";
      setProblem(e.status === 401 ? "That key was not accepted." : e.message);
    }
  };
  return html`<main class="login">
    <form onSubmit=${submit} data-testid="login-form">
      <h1>otelgw</h1>
      <p>This gateway has API keys. Sign in with one; it is kept for this tab only.</p>
      <label for="key">API key</label>
      <input id="key" type="password" autocomplete="off" value=${key} onInput=${(e) => setKey(e.target.value)} required autofocus />
      ${problem && html`<div class="error" role="alert">${problem}</div>`}
      <button type="submit">Sign in</button>
    </form>
  </main>`;
}

function ProjectPicker({ me }) {
  const value = projectChoice.value;
  if (me.projects && me.projects.length) {
    return html`<label class="picker">Project
      <select value=${value} onChange=${(e) => { projectChoice.value = e.target.value; }} data-testid="project-picker">
        <option value="">all (${me.projects.length})</option>
        ${me.projects.map((p) => html`<option value=${p}>${p}</option>`)}
      </select></label>`;
  }
  return html`<label class="picker">Project
    <input value=${value} placeholder="all" size="12" data-testid="project-picker"
      onChange=${(e) => { projectChoice.value = e.target.value.trim(); }} /></label>`;
}

function App() {
  const { path } = useLocation();
  const [me, setMe] = useState(null);
  const [needLogin, setNeedLogin] = useState(false);
  const [error, setError] = useState(null);
  const [page, setPage] = useState(null);

  const loadMe = () => api("/api/v1/whoami").then((who) => { setMe(who); setNeedLogin(false); setError(null); })
    .catch((e) => { if (e.status === 401) setNeedLogin(true); else setError(e); });
  useEffect(() => {
    auth.onUnauthorized = () => setNeedLogin(true);
    loadMe();
  }, []);
  useEffect(() => {
    const found = PAGES.find((p) => p.match.test(path));
    if (!found) { setPage({ Component: null, params: [] }); return; }
    const params = path.match(found.match).slice(1).map(decodeURIComponent);
    found.load().then((Component) => setPage({ Component, params }));
  }, [path]);

  if (needLogin) return html`<${Login} onDone=${loadMe} />`;
  if (error) return html`<main><${ErrorBox} error=${error} /></main>`;
  // The page loads its data while /whoami is answered (one round trip less on the first view);
  // a 401 on either shows the login form.
  if (!page) return html`<p class="boot">Loading otelgw…</p>`;
  const section = path === "/" || path.startsWith("/inferences") || path.startsWith("/traces") ? "/" : "/" + path.split("/")[1];
  return html`
    <header class="top">
      <${Link} href="/" class="brand">otelgw<//>
      <nav aria-label="Main">
        ${NAV.map(([href, label]) => html`<${Link} href=${href} aria-current=${section === href ? "page" : undefined}>${label}<//>`)}
      </nav>
      <div class="spacer"></div>
      ${me && html`<${ProjectPicker} me=${me} />
      <span class="who" title=${me.key_id ? `key ${me.key_id}` : "no key needed here"}>${me.role}${me.anonymous ? " (open)" : ""}</span>`}
      ${me && !me.anonymous && html`<button type="button" class="link" onClick=${() => { auth.key = ""; setMe(null); setNeedLogin(true); }}>Sign out</button>`}
    </header>
    <main>
      ${page.Component ? (me || page.Component === PAGES[0].component ? html`<${page.Component} params=${page.params} me=${me} />` : html`<p class="boot">Loading…</p>`)
        : html`<h1>Not found</h1><p>No page at ${path}.</p>`}
    </main>`;
}

render(html`<${App} />`, document.getElementById("app"));
