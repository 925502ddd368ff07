"""The web UI in a real browser: Playwright driving the Debian chromium package against a live
gateway fed by real OTel SDK exporters. Screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningGateway, start_gateway, wait_until
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from otlp_client import get_json

from otelgw.api.web import WebAssets
from otelgw.pipeline.mapper import derived_inference_id
from otelgw.store.keys import KeyStore

playwright = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> **bold** done'
SESSION = "trip-planning-42"


def _messages(role_texts: list[tuple[str, str]]) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in role_texts])


def feed(gateway: RunningGateway, project: str = "webui") -> dict[str, Any]:
    """GenAI spans from a real SDK app: a 3-turn session under a server span, a streamed call
    with TTFT, a failing call, and one whose message carries HTML."""
    provider = TracerProvider(resource=Resource.create({"service.name": "travel-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{gateway.http_url}/v1/traces", headers={"x-otelgw-project": project})))
    tracer = provider.get_tracer("webui.test")
    ids: dict[str, Any] = {"turns": []}
    now = time.time_ns() - 60_000_000_000
    history: list[tuple[str, str]] = [("system", "You plan trips.")]
    questions = ["I want to visit Japan.", "What about food?", "And the best season?"]
    answers = ["Japan is lovely. Tokyo and Kyoto are a good start.", "Try **ramen** and sushi.",
               "Spring, for the cherry blossoms."]
    for turn, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        start = now + turn * 5_000_000_000
        server = tracer.start_span("POST /chat", kind=SpanKind.SERVER, start_time=start)
        chat = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, start_time=start + 20_000_000,
                                 context=set_span_in_context(server))
        history.append(("user", question))
        chat.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 40 + 20 * turn,
            "gen_ai.usage.output_tokens": 12, "gen_ai.conversation.id": SESSION, "user.id": "alice",
            "gen_ai.input.messages": _messages(history), "gen_ai.output.messages": _messages([("assistant", answer)]),
        })
        history.append(("assistant", answer))
        chat.end(end_time=start + 20_000_000 + 900_000_000 + turn * 100_000_000)
        if turn == 2:  # an evaluation of the request as a whole: on a span that is no inference
            server.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "trip_helpfulness",
                                                          "gen_ai.evaluation.score.value": 0.9})
        server.end(end_time=start + 1_100_000_000 + turn * 100_000_000)
        ids["turns"].append(derived_inference_id(format(chat.get_span_context().trace_id, "032x"),
                                                 format(chat.get_span_context().span_id, "016x")))
    ids["session_trace"] = format(server.get_span_context().trace_id, "032x")

    def single(name: str, model: str, attributes: dict[str, Any], *, error: bool = False, start_offset: int = 30,
               duration_ms: int = 700) -> str:
        start = now + start_offset * 1_000_000_000
        span = tracer.start_span(name, kind=SpanKind.CLIENT, start_time=start)
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                             "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 300,
                             "gen_ai.usage.output_tokens": 80, **attributes})
        if error:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
            span.set_attribute("error.type", "RateLimitError")
        span.end(end_time=start + duration_ms * 1_000_000)
        return derived_inference_id(format(span.get_span_context().trace_id, "032x"),
                                    format(span.get_span_context().span_id, "016x"))

    ids["streamed"] = single("chat claude-sonnet-4", "claude-sonnet-4", {
        "gen_ai.latency.time_to_first_token": 0.25, "gen_ai.request.stream": True,
        "gen_ai.response.finish_reasons": ("max_tokens",),
        "gen_ai.input.messages": _messages([("user", "Write a haiku about latency.")]),
        "gen_ai.output.messages": _messages([("assistant", "Tokens trickle in\nthe first one takes its time\nthen "
                                                           "the rest arrive")])}, duration_ms=2400)
    ids["failed"] = single("chat claude-3-5-haiku", "claude-3-5-haiku", {
        "gen_ai.input.messages": _messages([("user", "Hello?")])}, error=True, start_offset=35, duration_ms=150)
    ids["xss"] = single("chat claude-sonnet-4", "claude-sonnet-4", {
        "gen_ai.input.messages": _messages([("user", XSS)]),
        "gen_ai.output.messages": _messages([("assistant", "I will not run that.")])}, start_offset=40)
    provider.shutdown()
    gateway.settle()
    return ids


@pytest.fixture(scope="module")
def fed(gateway: RunningGateway) -> dict[str, Any]:
    return feed(gateway)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed and could not be: `make tools` installs the Debian chromium package")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Page:
    """A tab that fails the test on any page error or console error (CSP violations included)."""

    def __init__(self, browser: Any, base: str, dark: bool = False) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800},
                                           color_scheme="dark" if dark else "light")
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.base = base
        self.problems: list[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)

    def goto(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def tab(browser: Any, gateway: RunningGateway) -> Iterator[Page]:
    page = Page(browser, gateway.api_url)
    yield page
    page.close()


def rows(page: Any) -> Any:
    return page.locator('[data-testid="inference-row"]')


def test_list_shows_the_sent_inferences_and_filters_and_sort_change_them(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto("/?range=24h")
    rows(page).first.wait_for()
    shown = {rows(page).nth(i).get_attribute("data-inference-id") for i in range(rows(page).count())}
    assert {*fed["turns"], fed["streamed"], fed["failed"], fed["xss"]} <= shown
    tab.shot("inferences")
    page.select_option('[data-testid="status-filter"]', "error")
    wait_until(lambda: rows(page).count() == 1 and rows(page).first.get_attribute("data-inference-id") == fed["failed"])
    assert "status=error" in page.url  # the filter lives in the URL
    page.goto(tab.base + "/?range=24h&model=claude-sonnet-4")
    wait_until(lambda: rows(page).count() == 2)
    # Anthropic's max_tokens is stored as `length`; the filter takes either spelling.
    page.goto(tab.base + "/?range=24h&finish_reason=max_tokens")
    wait_until(lambda: rows(page).count() == 1
               and rows(page).first.get_attribute("data-inference-id") == fed["streamed"])
    assert rows(page).first.locator('[data-testid="finish-reason"]').inner_text() == "length"
    page.goto(tab.base + "/?range=24h")
    rows(page).first.wait_for()
    page.click('[data-testid="sort-latency"]')  # descending first
    wait_until(lambda: rows(page).first.get_attribute("data-inference-id") == fed["streamed"])
    page.click('[data-testid="sort-latency"]')
    wait_until(lambda: rows(page).first.get_attribute("data-inference-id") == fed["failed"])
    assert "sort=latency" in page.url and "order=asc" in page.url


def test_detail_shows_messages_waterfall_and_ttft_and_feedback_round_trips(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto("/?range=24h")
    row = page.locator(f'[data-inference-id="{fed["streamed"]}"]')
    row.focus()
    page.keyboard.press("Enter")  # rows are reachable and open by keyboard
    page.locator('[data-testid="waterfall"]').wait_for()
    assert page.url.endswith(f"/inferences/{fed['streamed']}")
    messages = page.locator('[data-testid="message"]')
    assert [messages.nth(i).get_attribute("data-role") for i in range(messages.count())] == ["user", "assistant"]
    assert "haiku about latency" in messages.first.inner_text()
    waterfall = page.locator('[data-testid="waterfall"]')
    assert waterfall.locator('[data-phase="first_token"] .wf-bar').count() == 1
    assert "250 ms" in page.locator(".overview").inner_text()  # TTFT
    assert "2.40 s" in page.locator(".overview").inner_text()  # latency
    tab.shot("inference-detail")
    page.click('[data-testid="tab-feedback"]')
    form = page.locator('[data-testid="feedback-form"]')
    form.locator('input[value="false"]').check()
    form.locator('textarea[name="comment"]').fill("Too slow for a haiku")
    form.locator('button[type="submit"]').click()
    page.locator('[data-testid="feedback-item"]').first.wait_for()
    assert "Too slow for a haiku" in page.locator('[data-testid="feedback-list"]').inner_text()
    tab.shot("inference-feedback")
    page.goto(tab.base + "/?range=24h")
    row = page.locator(f'[data-inference-id="{fed["streamed"]}"]')
    row.wait_for()
    assert row.locator("td").last.inner_text().strip() == "1"  # the feedback count column


def test_trace_view_shows_the_span_tree(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto(f"/inferences/{fed['turns'][2]}")
    page.get_by_text("Full trace").click()
    spans = page.locator('[data-testid="trace-span"]')
    wait_until(lambda: spans.count() == 2)
    assert [spans.nth(i).get_attribute("aria-level") for i in range(2)] == ["1", "2"]
    assert "POST /chat" in spans.nth(0).inner_text() and "chat gpt-4o" in spans.nth(1).inner_text()
    spans.nth(1).click()
    detail = page.locator('[data-testid="span-detail"]')
    assert "gen_ai.request.model" in detail.inner_text()
    detail.get_by_text("Open the inference").wait_for()
    # The server span's evaluation is listed with the trace's feedback and selects its span.
    item = page.locator('[data-testid="trace-feedback-item"]')
    item.first.wait_for()
    assert item.count() == 1 and "trip_helpfulness" in item.inner_text() and "0.9" in item.inner_text()
    item.get_by_role("button", name="POST /chat").click()
    assert "POST /chat" in page.locator('[data-testid="span-detail"] h2').first.inner_text()
    tab.shot("trace")


def test_sessions_group_a_multi_turn_conversation(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto("/sessions?range=24h")
    row = page.locator(f'[data-testid="session-row"][data-session-id="{SESSION}"]')
    row.wait_for()
    assert "alice" in row.inner_text() and "3" in row.inner_text()
    tab.shot("sessions")
    row.click()
    turns = page.locator('[data-testid="session-turn"]')
    wait_until(lambda: turns.count() == 3)
    text = page.locator('[data-testid="session-timeline"]').inner_text()
    for fragment in ("I want to visit Japan.", "What about food?", "Spring, for the cherry blossoms."):
        assert text.count(fragment) == 1, fragment  # history re-sent with each call is shown once
    tab.shot("session")


def test_deep_links_survive_a_reload(tab: Page, fed: dict[str, Any]) -> None:
    for path, marker in ((f"/inferences/{fed['turns'][0]}", '[data-testid="waterfall"]'),
                         (f"/traces/{fed['session_trace']}", '[data-testid="trace-span"]'),
                         (f"/sessions/{SESSION}", '[data-testid="session-turn"]'),
                         ("/?range=24h&status=error", '[data-testid="inference-row"]')):
        page = tab.goto(path)
        page.locator(marker).first.wait_for()
        page.reload()
        page.locator(marker).first.wait_for()
        assert page.url == tab.base + path


def test_untrusted_content_renders_as_text(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto(f"/inferences/{fed['xss']}")
    message = page.locator('[data-testid="message"][data-role="user"]')
    message.wait_for()
    text = message.inner_text()
    assert "<script>window.__xss = 1</script>" in text and '<img src=x onerror="window.__xss = 2">' in text
    assert message.locator("script, img").count() == 0
    assert message.locator("strong").inner_text() == "bold"  # markdown, rendered as elements, not HTML
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None


def test_dashboard_and_settings(tab: Page, fed: dict[str, Any]) -> None:
    page = tab.goto("/dashboard")
    page.locator('[data-testid^="chart-"]').first.wait_for()
    page.locator("canvas").first.wait_for()
    tab.shot("dashboard")
    page = tab.goto("/settings")
    page.get_by_text("API keys").first.wait_for()
    page.locator('[data-testid="retention"]').wait_for()
    assert "30 d" in page.locator('[data-testid="retention"]').inner_text()  # the default content retention
    page.locator('[data-testid="masking-status"]').wait_for()
    tab.shot("settings")


def test_dark_theme_follows_the_system(browser: Any, gateway: RunningGateway, fed: dict[str, Any]) -> None:
    dark = Page(browser, gateway.api_url, dark=True)
    try:
        page = dark.goto("/?range=24h")
        rows(page).first.wait_for()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)"
        dark.shot("inferences-dark")
    finally:
        dark.close()


def test_shell_headers_caching_and_size(gateway: RunningGateway) -> None:
    import urllib.request
    with urllib.request.urlopen(f"{gateway.api_url}/sessions/anything") as response:
        shell = response.read().decode()
        csp = response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    version = re.search(r"/assets/([0-9a-f]{16})/app\.js", shell).group(1)
    with urllib.request.urlopen(f"{gateway.api_url}/assets/{version}/app.js") as response:
        assert "immutable" in response.headers["Cache-Control"]
        assert response.headers["Content-Type"].startswith("text/javascript")
    status, _ = get_json(f"{gateway.api_url}/assets/0000000000000000/app.js")
    assert status == 404
    assets = WebAssets()
    shipped = sum(len(a.gzipped or a.body) for name, a in assets.files.items()
                  if name.endswith((".js", ".css")))
    assert shipped < 300 * 1024, shipped
    assert all(len(gzip.decompress(a.gzipped)) == len(a.body) for a in assets.files.values() if a.gzipped)


@pytest.fixture(scope="module")
def secured(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = start_gateway(chdb_path, "t_web_ui_auth", tmp_path_factory.mktemp("webauth"))
    try:
        running.ids = {"alpha": feed(running, "alpha")["streamed"], "beta": feed(running, "beta")["streamed"]}
        store = KeyStore(running._clients.get())
        running.viewer = store.create(projects=["alpha"], role="viewer", ingest=False).key
        running.gateway.auth.reload()
        yield running
    finally:
        assert running.stop()


def test_login_and_a_viewer_key_sees_only_its_project(browser: Any, secured: RunningGateway) -> None:
    tab = Page(browser, secured.api_url)
    try:
        page = tab.goto("/?range=24h")
        form = page.locator('[data-testid="login-form"]')
        form.wait_for()
        tab.shot("login")
        page.fill("#key", "otgw_000000000000_wrong")
        page.click('button[type="submit"]')
        page.get_by_text("That key was not accepted.").wait_for()
        page.fill("#key", secured.viewer)
        page.click('button[type="submit"]')
        rows(page).first.wait_for()
        projects = {page.locator('[data-testid="inference-row"] td').nth(1).inner_text()}
        assert projects == {"alpha"}
        assert page.locator(f'[data-inference-id="{secured.ids["beta"]}"]').count() == 0
        options = page.locator('[data-testid="project-picker"] option')
        assert [options.nth(i).inner_text() for i in range(options.count())][1:] == ["alpha"]
        page.goto(f"{secured.api_url}/inferences/{secured.ids['beta']}")
        page.get_by_role("alert").wait_for()
        assert "not found" in page.get_by_role("alert").inner_text().lower()
        page.goto(f"{secured.api_url}/inferences/{secured.ids['alpha']}")  # the key stays for the tab
        page.locator('[data-testid="waterfall"]').wait_for()
        tab.problems = [p for p in tab.problems if "401" not in p and "404" not in p]  # expected answers
    finally:
        tab.close()


def test_a_call_a_log_record_said_has_no_trace_link(tab: Page, fed: dict[str, Any], gateway: RunningGateway) -> None:
    """Claude Code's events (captured): the call has no trace, so the page offers none."""
    from fixtures_lib import all_fixtures
    from otlp_client import post_otlp

    fixture = next(f for f in all_fixtures() if f.name == "claudecode-chat")
    for signal, encoding, body in fixture.payloads():
        assert post_otlp(gateway.http_url, signal, body, encoding, project="agents-ui").status == 200
    gateway.settle()
    (row,) = gateway.query("SELECT toString(inference_id) AS id FROM inferences FINAL WHERE project_id = 'agents-ui'")
    page = tab.goto(f"/inferences/{row['id']}")
    page.get_by_text("said by a log record").wait_for()
    assert page.get_by_text("Full trace").count() == 0 and "claude-opus-5-5" in page.locator("h1").inner_text()
    page.locator('[data-testid="tab-raw"]').click()
    page.get_by_text("A log record said this call").wait_for()


def test_new_ids_never_collide_with_fixtures() -> None:
    assert str(uuid.UUID(derived_inference_id("0" * 31 + "1", "0" * 15 + "1")))
