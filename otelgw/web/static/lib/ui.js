// Shared UI plumbing: Preact + htm, the router, the API client and the session's key.
import { h, render, Fragment } from "../vendor/preact.module.js";
import { useState, useEffect, useRef, useCallback, useMemo } from "../vendor/hooks.module.js";
import htm from "../vendor/htm.module.js";

export const html = htm.bind(h);
export { h, render, Fragment, useState, useEffect, useRef, useCallback, useMemo };

// --- router: history API; every page path is served the app shell, so links reload fine ---
const listeners = new Set();
export function navigate(to, { replace = false } = {}) {
  if (to === location.pathname + location.search) return;
  history[replace ? "replaceState" : "pushState"](null, "", to);
  listeners.forEach((fn) => fn());
  if (!replace) window.scrollTo(0, 0);
}
addEventListener("popstate", () => listeners.forEach((fn) => fn()));
export function useLocation() {
  const [, bump] = useState(0);
  useEffect(() => {
    const fn = () => bump((n) => n + 1);
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}
export function Link({ href, children, ...rest }) {
  const onClick = (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${onClick} ...${rest}>${children}</a>`;
}

// --- the key: kept for this tab only (sessionStorage), sent as a bearer token ---
const KEY = "otelgw.key";
export const auth = {
  get key() { return sessionStorage.getItem(KEY) || ""; },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const headers = {};
  if (auth.key) headers.Authorization = `Bearer ${auth.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) auth.onUnauthorized();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const data = await response.json(); message = data.error?.message || data.message || message; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return raw ? response : response.json();
}

// A fetch bound to a component's life: data, error, loading, and reload().
export function useApi(path, options, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!path) return undefined;
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api(path, { ...options, signal: controller.signal })
      .then((data) => setState({ data, error: null, loading: false }))
      .catch((error) => { if (error.name !== "AbortError") setState({ data: null, error, loading: false }); });
    return () => controller.abort();
  }, [path, tick, ...(deps || [])]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const prefix = { 403: "Not allowed: ", 404: "Not found: " }[error.status] || "";
  return html`<div class="error" role="alert">${prefix}${error.message || String(error)}</div>`;
}

export function Copy({ text, label }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try { await navigator.clipboard.writeText(text); setDone(true); setTimeout(() => setDone(false), 1200); } catch (_) { /* no clipboard */ }
  };
  return html`<button type="button" class="copy" onClick=${copy} title=${`Copy ${label || text}`} aria-label=${`Copy ${label || "value"}`}>${done ? "copied" : "copy"}</button>`;
}

// Collapsible JSON: rendered as text, never parsed into markup.
export function JsonView({ value, open = false, label = "JSON" }) {
  return html`<details class="json" open=${open}><summary>${label}</summary><pre>${JSON.stringify(value, null, 2)}</pre></details>`;
}

// The project the pages filter on ("" = every project the key sees).
const PROJECT = "otelgw.project";
export const projectChoice = {
  get value() { return localStorage.getItem(PROJECT) || ""; },
  set value(v) { v ? localStorage.setItem(PROJECT, v) : localStorage.removeItem(PROJECT); listeners.forEach((fn) => fn()); },
};
