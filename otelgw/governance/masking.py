"""Masking at ingest: secrets (always) and PII (per project) become typed placeholders in every
stored copy of text: message content, previews, span and log attributes, span events, log
bodies, feedback comments, error messages. Applied to a record's rows after mapping and before
anything is encoded for ClickHouse, so masked text never reaches any table.

Speed: a string is scanned once by a fast trigger pattern (runs of digits and separators) and
tested for the secrets' literal prefixes (`sk-`, `AKIA`, `-----BEGIN`, ...) and `@`; the
detectors' patterns then run only where a trigger is, the digit-made PII as one combined pattern
on windows around the runs. Results are memoised per record, since the same values recur across
a span's rows (span attributes, inference attributes, previews).

Content capture per project: `full` (secrets still masked), `masked` (secrets and PII),
`metadata` (no message content at all: message rows keep role, index and length only, the
content attributes of spans and events are dropped, log bodies emptied).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import threading
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec

from otelgw.pipeline.rows import RowBatch

Capture = Literal["full", "masked", "metadata"]

# Secrets: (name, the substrings one of which it needs, pattern). A pattern runs only on strings
# holding one of its triggers (a plain substring test), and starts with a literal where it can,
# so the regex engine skips ahead to it.
SECRETS: list[tuple[str, tuple[str, ...], str]] = [
    ("private_key", ("-----BEGIN",),
     r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----"),
    ("url_password", ("://",), r"(?<![\w+.-])[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s:/@\"']{1,128}:(?P<pw>[^\s@/\"']{1,256})@"),
    ("openai_key", ("sk-",), r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ("aws_key", ("AKIA", "ASIA"), r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])"),
    ("aws_secret", ("ws_secret", "WS_SECRET"), r"(?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}"),
    ("gcp_key", ("AIza",), r"AIza[0-9A-Za-z_-]{35}"),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("slack_token", ("xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("otelgw_key", ("otgw_",), r"otgw_[0-9a-f]{12}_[A-Za-z0-9_-]{16,}"),
    ("bearer", ("earer",), r"[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}"),
]
EMAIL = r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b"
# The PII that is made of digits, in one combined pattern, run only on windows around the places
# a fast scan found a run of digits and separators (or an IPv6-looking group).
PII_DIGITS: list[tuple[str, str]] = [
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
    ("credit_card", r"(?<![\w.])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w.])"),
    ("ssn", r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    ("phone", r"(?<![\w+])\+[1-9](?:[ .-]?\(?\d\)?){7,14}(?!\d)"
              r"|(?<![\w.-])\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])"
              r"|(?<![\w.-])0\d{2,4}[ .-]\d{3,4}[ .-]?\d{3,4}(?![\w-])"),
    ("ipv4", r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?!\w|\.\d)"),
    ("ipv6", r"(?<![\w:])(?=[0-9A-Fa-f:]*[0-9A-Fa-f][0-9A-Fa-f:]*:[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}"
             r"[0-9A-Fa-f]{0,4}(?![\w:])"),
]
_DIGIT_TRIGGER = re.compile(r"\d[\d .()+:/-]{5,}\d|[0-9A-Fa-f]{0,4}::?[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:")
_WINDOW = 48
# Any secret's trigger: one scan decides whether any secret pattern needs to run at all.
_SECRET_TRIGGER = re.compile("|".join(re.escape(t) for _, triggers, _ in SECRETS for t in triggers))
_SECRET_PATTERNS = {name: re.compile(pattern) for name, _, pattern in SECRETS}
_EMAIL = re.compile(EMAIL)
_PII_PATTERN = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in PII_DIGITS))
PLACEHOLDERS = {**{name: "[SECRET]" for name, _, _ in SECRETS}, "email": "[EMAIL]", "iban": "[IBAN]",
                "credit_card": "[CREDIT_CARD]", "ssn": "[SSN]", "phone": "[PHONE]", "ipv4": "[IP]", "ipv6": "[IP]"}
DETECTORS = PLACEHOLDERS
# Projects with their own masking counters on /metrics; the rest are counted as `other`.
MAX_COUNTED_PROJECTS = 100
CONTENT_KEYS = {"gen_ai.prompt", "gen_ai.completion", "input.value", "output.value", "ai.prompt", "ai.prompt.messages",
                "ai.response.text", "ai.response.object", "ai.response.toolCalls", "traceloop.entity.input",
                "traceloop.entity.output", "langfuse.observation.input", "langfuse.observation.output",
                "langfuse.trace.input", "langfuse.trace.output", "gen_ai.input.messages", "gen_ai.output.messages",
                "gen_ai.system_instructions", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"}
CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.",
                    "llm.prompts.", "gen_ai.content.")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    code = text.replace(" ", "")
    if not 15 <= len(code) <= 34:
        return False
    moved = code[4:] + code[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn(digits)


def _ipv6_ok(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return text.count(":") >= 2 and not re.fullmatch(r"[\d:]+", text)  # "10:30:00" is a time


_VALIDATORS: dict[str, Callable[[str], bool]] = {"credit_card": _card_ok, "iban": iban_ok, "ipv6": _ipv6_ok}


def _replacer(name: str, counts: dict[str, int]) -> Callable[[re.Match[str]], str]:
    """The substitution for one detector (or, for the combined PII pattern, the group that
    matched): validated matches become the placeholder and are counted."""
    def replace(match: re.Match[str]) -> str:
        which = name or match.lastgroup or ""
        whole = match.group(0)
        if which == "url_password":
            start, end = match.span("pw")
            counts[which] = counts.get(which, 0) + 1
            return whole[:start - match.start()] + "[SECRET]" + whole[end - match.start():]
        if which in ("openai_key", "aws_key", "gcp_key", "github_token", "slack_token", "otelgw_key", "bearer"):
            before = match.string[match.start() - 1] if match.start() else " "
            if before.isalnum() or before == "_":  # inside a longer word: not a key
                return whole
        validator = _VALIDATORS.get(which)
        if validator is not None and not validator(whole):
            return whole
        counts[which] = counts.get(which, 0) + 1
        return PLACEHOLDERS[which]

    return replace


def _mask_digit_pii(text: str, counts: dict[str, int]) -> str:
    """Run the combined digit-PII pattern on windows around candidate runs only, widened to
    whitespace so no match is cut at a window edge."""
    windows: list[list[int]] = []
    for found in _DIGIT_TRIGGER.finditer(text):
        start = max(found.start() - _WINDOW, 0)
        end = min(found.end() + _WINDOW, len(text))
        space = text.rfind(" ", 0, start)
        start = 0 if space < 0 or start - space > _WINDOW else space
        space = text.find(" ", end)
        end = len(text) if space < 0 or space - end > _WINDOW else space
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    if not windows:
        return text
    replace = _replacer("", counts)
    parts: list[str] = []
    last = 0
    for start, end in windows:
        parts.append(text[last:start])
        parts.append(_PII_PATTERN.sub(replace, text[start:end]))
        last = end
    parts.append(text[last:])
    return "".join(parts)


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    pattern: str
    placeholder: str = "[REDACTED]"


class ProjectPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pii: bool | None = None  # None: the gateway default (OTELGW_MASK_PII)
    capture: Capture | None = None  # None: masked when PII masking is on, else full
    rules: list[Rule] = []
    drop_attributes: list[str] = []
    hash_attributes: list[str] = []


class MaskingFile(msgspec.Struct, forbid_unknown_fields=True):
    defaults: ProjectPolicy = msgspec.field(default_factory=ProjectPolicy)
    projects: dict[str, ProjectPolicy] = {}


class MaskingStats(msgspec.Struct):
    # project -> detector -> matches replaced
    masked: dict[str, dict[str, int]] = {}
    rows_changed: int = 0


class _Resolved:
    """One project's policy, compiled."""

    __slots__ = ("capture", "drop", "hash", "pii", "rule_names", "rules")

    def __init__(self, policy: ProjectPolicy, default_pii: bool) -> None:
        self.pii = default_pii if policy.pii is None else policy.pii
        self.capture: Capture = policy.capture or ("masked" if self.pii else "full")
        # `full` capture keeps PII (secrets are masked whatever the policy).
        self.pii = self.pii and self.capture != "full"
        self.rules = [(re.compile(rule.pattern), rule.placeholder) for rule in policy.rules]
        self.rule_names = [f"rule:{rule.placeholder}" for rule in policy.rules]
        self.drop = frozenset(policy.drop_attributes)
        self.hash = frozenset(policy.hash_attributes)


def load_masking(path: str | None) -> MaskingFile:
    if not path:
        return MaskingFile()
    try:
        data = tomllib.loads(Path(path).read_text())
        policies = msgspec.convert(data, MaskingFile)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"masking_file {path}: {exc}") from exc
    for where, policy in [("defaults", policies.defaults), *policies.projects.items()]:
        for rule in policy.rules:
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise ValueError(f"masking_file {path}: {where}: pattern {rule.pattern!r}: {exc}") from exc
    return policies


class Masker:
    def __init__(self, policies: MaskingFile, *, default_pii: bool = False, hmac_key: str = "",
                 content_keys: Iterable[str] = (), content_prefixes: Iterable[str] = ()) -> None:
        self._policies = policies
        self._default_pii = default_pii
        self._key = hmac_key.encode() if hmac_key else b""
        self._resolved: dict[str, _Resolved] = {}
        self._content_keys = frozenset(CONTENT_KEYS | set(content_keys))
        self._content_prefixes = tuple(sorted({*CONTENT_PREFIXES, *content_prefixes}))
        if not hmac_key and any(p.hash_attributes for p in [policies.defaults, *policies.projects.values()]):
            raise ValueError("masking_file hashes attributes: set mask_hmac_key (OTELGW_MASK_HMAC_KEY)")
        # What this masker counted since its counts were last taken (a mapping worker hands them
        # to the gateway after every chunk).
        self.counts = MaskingCounts()

    def policy(self, project: str) -> _Resolved:
        resolved = self._resolved.get(project)
        if resolved is None:
            if len(self._resolved) >= 10_000:  # project names come from requests: bound the cache
                self._resolved.clear()
            chosen = self._policies.projects.get(project, self._policies.defaults)
            if chosen is not self._policies.defaults:
                base = self._policies.defaults
                chosen = ProjectPolicy(
                    pii=chosen.pii if chosen.pii is not None else base.pii,
                    capture=chosen.capture or base.capture, rules=[*base.rules, *chosen.rules],
                    drop_attributes=[*base.drop_attributes, *chosen.drop_attributes],
                    hash_attributes=[*base.hash_attributes, *chosen.hash_attributes])
            resolved = self._resolved[project] = _Resolved(chosen, self._default_pii)
        return resolved

    # -- strings ---------------------------------------------------------------------------------

    def mask_text(self, text: str, policy: _Resolved, counts: dict[str, int]) -> str:
        out = text
        if len(text) >= 6:
            if _SECRET_TRIGGER.search(out):
                for name, triggers, _ in SECRETS:
                    if any(t in out for t in triggers):
                        out = _SECRET_PATTERNS[name].sub(_replacer(name, counts), out)
            if policy.pii:
                if "@" in out:
                    out = _EMAIL.sub(_replacer("email", counts), out)
                out = _mask_digit_pii(out, counts)
        for (pattern, placeholder), name in zip(policy.rules, policy.rule_names, strict=True):
            out, n = pattern.subn(placeholder, out)
            if n:
                counts[name] = counts.get(name, 0) + n
        return out

    def _hash(self, value: str) -> str:
        return "hmac:" + hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:32]

    def is_content_key(self, key: str) -> bool:
        return key in self._content_keys or key.startswith(self._content_prefixes)

    def _attributes(self, attrs: dict[str, str], policy: _Resolved, memo: dict[str, str],
                    counts: dict[str, int]) -> tuple[dict[str, str], bool]:
        if not attrs:
            return attrs, False
        plain = not (policy.drop or policy.hash or policy.capture == "metadata")
        if plain and not policy.rules and not policy.pii and not _SECRET_TRIGGER.search("\x00".join(attrs.values())):
            # One scan of all values together: no secret's trigger, nothing to mask. (With PII on,
            # digits are too common for this to pay.)
            return attrs, False
        if plain:
            # Only the values that change are looked at twice; most attribute maps keep all.
            changes: dict[str, str] = {}
            for key, value in attrs.items():
                masked = memo.get(value)
                if masked is None:
                    masked = memo[value] = self.mask_text(value, policy, counts) if len(value) >= 6 or \
                        policy.rules else value
                if masked != value:
                    changes[key] = masked
            return ({**attrs, **changes}, True) if changes else (attrs, False)
        changed = False
        out: dict[str, str] = {}
        for key, value in attrs.items():
            if key in policy.drop or (policy.capture == "metadata" and self.is_content_key(key)):
                changed = True
                continue
            if key in policy.hash:
                out[key] = self._hash(value)
                changed = True
                continue
            masked = memo.get(value)
            if masked is None:
                masked = memo[value] = self.mask_text(value, policy, counts)
            changed |= masked != value
            out[key] = masked
        return (out, True) if changed else (attrs, False)

    def _events(self, events: str, policy: _Resolved, memo: dict[str, str], counts: dict[str, int]) -> str:
        """Span events are JSON: mask their attribute values only (never timestamps)."""
        if not events or events == "[]":
            return events
        if not (policy.pii or policy.rules or policy.drop or policy.hash) and not _SECRET_TRIGGER.search(events):
            return events  # no secret's trigger anywhere: nothing to decode for
        try:
            parsed = msgspec.json.decode(events)
        except msgspec.DecodeError:
            return self.mask_text(events, policy, counts)
        changed = False
        for event in parsed if isinstance(parsed, list) else []:
            attrs = event.get("attributes") if isinstance(event, dict) else None
            if isinstance(attrs, dict):
                new, did = self._attributes({k: v if isinstance(v, str) else msgspec.json.encode(v).decode()
                                             for k, v in attrs.items()}, policy, memo, counts)
                if did:
                    event["attributes"] = new
                    changed = True
        return msgspec.json.encode(parsed).decode() if changed else events

    # -- rows ------------------------------------------------------------------------------------

    def apply(self, batch: RowBatch) -> None:
        """Mask every text field of a record's rows in place; flags the inferences it changed."""
        # Masked values memoised per policy: one record may hold rows of several projects.
        memos: dict[int, dict[str, str]] = {}
        counts: dict[str, dict[str, int]] = {}

        def memo_for(policy: _Resolved) -> dict[str, str]:
            return memos.setdefault(id(policy), {})

        changed_inferences: set[str] = set()

        def tally(project: str) -> dict[str, int]:
            return counts.setdefault(project, {})

        def text(value: str, policy: _Resolved, project: str) -> str:
            memo = memo_for(policy)
            masked = memo.get(value)
            if masked is None:
                masked = memo[value] = self.mask_text(value, policy, tally(project))
            return masked

        for row in batch.messages:
            policy = self.policy(row.project_id)
            if policy.capture == "metadata":
                row.content_length = len(row.content)
                if row.content or row.tool_calls:
                    changed_inferences.add(row.inference_id)
                row.content, row.tool_calls = "", ""
                continue
            row.content_length = len(row.content)
            content, tools = text(row.content, policy, row.project_id), text(row.tool_calls, policy, row.project_id)
            if content != row.content or tools != row.tool_calls:
                changed_inferences.add(row.inference_id)
                row.content, row.tool_calls = content, tools
        for row in batch.inferences:
            policy = self.policy(row.project_id)
            before = (row.input_preview, row.output_preview, row.error_message)
            if policy.capture == "metadata":
                row.input_preview = row.output_preview = ""
            else:
                row.input_preview = text(row.input_preview, policy, row.project_id)
                row.output_preview = text(row.output_preview, policy, row.project_id)
            row.error_message = text(row.error_message, policy, row.project_id)
            row.attributes, did = self._attributes(row.attributes, policy, memo_for(policy), tally(row.project_id))
            if did or before != (row.input_preview, row.output_preview, row.error_message) \
                    or row.inference_id in changed_inferences:
                row.masked = True
        resources: dict[int, dict[str, str]] = {}  # a resource's map is shared by its spans
        for row in batch.spans:
            policy = self.policy(row.project_id)
            row.attributes, _ = self._attributes(row.attributes, policy, memo_for(policy), tally(row.project_id))
            shared = id(row.resource_attributes)
            masked_resource = resources.get(shared)
            if masked_resource is None:
                masked_resource = resources[shared] = self._attributes(
                    row.resource_attributes, policy, memo_for(policy), tally(row.project_id))[0]
            row.resource_attributes = masked_resource
            row.status_message = text(row.status_message, policy, row.project_id)
            row.events = self._events(row.events, policy, memo_for(policy), tally(row.project_id)) \
                if policy.capture != "metadata" else _strip_event_attributes(row.events)
        for row in batch.logs:
            policy = self.policy(row.project_id)
            row.body = "" if policy.capture == "metadata" else text(row.body, policy, row.project_id)
            row.attributes, _ = self._attributes(row.attributes, policy, memo_for(policy), tally(row.project_id))
            row.resource_attributes, _ = self._attributes(row.resource_attributes, policy, memo_for(policy),
                                                          tally(row.project_id))
        for row in batch.metric_points:
            policy = self.policy(row.project_id)
            row.attributes, _ = self._attributes(row.attributes, policy, memo_for(policy), tally(row.project_id))
            row.resource_attributes, _ = self._attributes(row.resource_attributes, policy, memo_for(policy),
                                                          tally(row.project_id))
        for row in batch.feedback:
            policy = self.policy(row.project_id)
            row.comment = text(row.comment, policy, row.project_id)
        for row in batch.unmapped_attributes:
            policy = self.policy(row.project_id)
            row.example = "" if policy.capture == "metadata" or row.key in policy.drop or row.key in policy.hash \
                else text(row.example, policy, row.project_id)
        if counts or changed_inferences:
            self.counts.merge(MaskingStats(masked=counts, rows_changed=sum(1 for r in batch.inferences if r.masked)))

    def take_stats(self) -> MaskingStats:
        return self.counts.take()


class MaskingCounts:
    """Values masked, by project (bounded: project names come from requests) and detector; safe
    across threads. The gateway keeps one for /metrics, adding what each mapped chunk counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stats = MaskingStats()

    def merge(self, stats: MaskingStats) -> None:
        with self._lock:
            for project, by_detector in stats.masked.items():
                if project not in self.stats.masked and len(self.stats.masked) >= MAX_COUNTED_PROJECTS:
                    project = "other"
                totals = self.stats.masked.setdefault(project, {})
                for name, n in by_detector.items():
                    totals[name] = totals.get(name, 0) + n
            self.stats.rows_changed += stats.rows_changed

    def take(self) -> MaskingStats:
        """The counts so far, reset."""
        with self._lock:
            taken, self.stats = self.stats, MaskingStats()
            return taken

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {p: dict(d) for p, d in self.stats.masked.items()}


def _strip_event_attributes(events: str) -> str:
    if not events or events == "[]":
        return events
    try:
        parsed = msgspec.json.decode(events)
    except msgspec.DecodeError:
        return "[]"
    if not isinstance(parsed, list):
        return "[]"
    for event in parsed:
        if isinstance(event, dict) and "attributes" in event:
            event["attributes"] = {}
    return msgspec.json.encode(parsed).decode()


def masker_from_config(cfg: Any, content: tuple[list[str], list[str]] = ([], []),
                       policies: MaskingFile | None = None) -> Masker:
    """The masker `cfg` asks for; `policies` when the masking file was already read."""
    keys, prefixes = content
    return Masker(policies if policies is not None else load_masking(cfg.masking_file or None),
                  default_pii=cfg.mask_pii, hmac_key=cfg.mask_hmac_key, content_keys=keys, content_prefixes=prefixes)
