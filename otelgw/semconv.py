"""Load the convention tables in semconv/*.toml and compile them for the mapper.

The tables are data; this module turns them into lookups that cost little per span: detection
rules grouped by attribute, per-family ordered source lists, and a cached "is this attribute
understood" test for the unmapped-attribute report.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from otelgw.canonical import VALUES_FILE, CanonicalValues
from otelgw.resources import semconv_dir

# Fields an inference row takes from the tables, with the type each source is coerced to.
FIELD_TYPES: dict[str, type] = {
    "operation": str,
    "provider": str,
    "request_model": str,
    "response_model": str,
    "input_tokens": int,
    "output_tokens": int,
    "cached_input_tokens": int,
    "cache_write_input_tokens": int,
    "reasoning_tokens": int,
    "total_tokens": int,
    "cost_usd": float,
    "ttft_ms": float,
    "queue_ms": float,
    "is_streaming": bool,
    "error_type": str,
    "error_message": str,
    "level": str,
    "finish_reason": str,
    "response_id": str,
    "session_id": str,
    "user_id": str,
    "inference_id": str,
    # Log-record families (a record that says a whole call): how long it took (its record marks
    # its end) and the HTTP status it ended with (>= 400: failed).
    "duration_ms": float,
    "http_status": int,
}

# Attribute prefixes that look like GenAI data: such a key no table knows is reported.
GENAI_PREFIXES: tuple[str, ...] = ("gen_ai.", "llm.", "langfuse.", "ai.", "traceloop.")


class SourceSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    attribute: str = ""
    json: str = ""
    path: str = ""
    event: str = ""
    span_name: str = ""
    # A regex over the instrumentation scope's name (first group): OpenLIT names its scopes after
    # the provider module, and a failed call carries no attribute to say it.
    scope_name: str = ""
    since_start: str = ""
    scale: float = 1.0
    map: dict[str, Any] = {}
    lower: bool = False
    # Keep a string value up to the last occurrence of this text ("openai.chat" -> "openai",
    # "google.vertex.chat" -> "google.vertex").
    until_last: str = ""
    # The value is `true` whenever the attribute is there, whatever it holds (Pydantic AI says a
    # request streamed only by sending its first-chunk time).
    present: bool = False
    # With `json` and `path`: the number at the path plus its siblings named `<last part>_*`
    # (Langfuse's usage types are additive: `input` leaves out `input_cached_tokens`, ...).
    plus_details: bool = False


class DetectRule(msgspec.Struct, forbid_unknown_fields=True):
    attribute: str = ""
    in_: list[str] = msgspec.field(default_factory=list, name="in")
    requires_any: list[str] = []
    scope_prefix: str = ""
    span_name: str = ""
    # Log-record families: the record's event name (its `event_name`, else its `event.name`
    # attribute) is one of these.
    event_name: list[str] = []


class MessageSpec(msgspec.Struct, forbid_unknown_fields=True):
    direction: Literal["input", "output", "system"]
    shape: Literal["json", "indexed", "role_lines", "text", "events"]
    attribute: str = ""
    event: str = ""
    default_role: str = ""
    mime_attribute: str = ""
    # json shape: the messages sit under this dotted path of the attribute's JSON document
    # (Pydantic Logfire's legacy request_data.messages / response_data.message)
    path: str = ""
    # indexed shape: sub-keys under `prefix{i}.`; `{j}` stands for a part or tool-call index
    prefix: str = ""
    role: str = ""
    content: str = ""
    content_parts: str = ""
    # The type of part {j} (OpenInference's message_content.type): a media part (an image) is a
    # marker in the content, never nothing.
    content_part_type: str = ""
    content_may_be_json: bool = False
    tool_name: str = ""
    tool_arguments: str = ""
    tool_id: str = ""
    tool_call_id: str = ""
    name: str = ""
    finish_reason: str = ""
    # indexed shape: one call in OpenAI's legacy `function_call` form (no index, no id)
    function_name: str = ""
    function_arguments: str = ""
    # Replaces an earlier source's messages for this direction when those are all empty (no
    # content, tool call or tool call id): LiteLLM sends its tool call's output message with empty
    # parts and the call in OpenLLMetry's attributes. Opt-in: other fallbacks (a whole response
    # document as one message) must not replace an answer that was empty.
    fills_empty: bool = False
    # json shape: only a value that parses as a JSON document (a cut-off one yields nothing, and
    # the direction goes to the next source) instead of being taken as plain text.
    json_only: bool = False
    # text shape: a tool call carried in separate attributes
    tool_calls_attribute: str = ""
    tool_name_attribute: str = ""
    tool_id_attribute: str = ""
    tool_arguments_attribute: str = ""

    def attributes(self) -> list[str]:
        return [a for a in (self.attribute, self.mime_attribute, self.tool_calls_attribute,
                            self.tool_name_attribute, self.tool_id_attribute, self.tool_arguments_attribute) if a]


class UsageExcludes(msgspec.Struct, forbid_unknown_fields=True):
    """A library that passes a provider's usage on as it is, where it counts less than otelgw's
    fields do: the `add` attributes are added to `field` (and to the total, which left them out
    too), for spans of these providers (and, if given, of scopes starting with one of these).
    `rest_of_total`: what the library's total counts beyond input + output is added to `field`
    instead (a library whose total counts the thinking tokens its output leaves out)."""

    field: Literal["input_tokens", "output_tokens"]
    providers: list[str]
    add: list[str] = []
    scopes: list[str] = []
    rest_of_total: bool = False


class CompanionSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A record that says more of a log-record family's call (its content), found in the same
    export request by an attribute both hold. Its attributes are read as `<event_name>.<key>`."""

    event_name: str
    key: str
    # Values that mean "not logged" (Claude Code's "<REDACTED>" when a content switch is off).
    absent: list[str] = []


class FamilyTable(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    priority: int
    description: str = ""
    # "logs": the family's calls are log records, one record a call (a coding agent's
    # `api_request` event), not spans.
    signal: Literal["traces", "logs"] = "traces"
    # Logs: a record that carries trace context is no inference (its trace's spans say the call:
    # Claude Code with its traces on).
    unlinked_only: bool = False
    # Attributes holding message content that no `messages` spec reads (a coding agent's logged
    # prompt, response or request body): dropped with the messages under capture = "metadata".
    content: list[str] = []
    # Logs: records that carry a call's content beside its record (Claude Code's prompts and
    # answers).
    companions: list[CompanionSpec] = []
    detect: list[DetectRule] = []
    defaults: dict[str, Any] = {}
    fields: dict[str, list[str | SourceSpec]] = {}
    messages: list[MessageSpec] = []
    known: list[str] = []
    known_prefixes: list[str] = []
    # Spans whose attribute has one of these values are never inferences, whichever family's
    # rule would match (agent and tool operations: GenAI spans, but not model calls).
    not_inference: list[DetectRule] = []
    # Usage this family's libraries pass on as the provider counts it (Anthropic's and Bedrock's
    # input tokens leave out the prompt cache's, Gemini's output tokens the thinking ones).
    usage_excludes: list[UsageExcludes] = []


class Source(msgspec.Struct, frozen=True):
    """One compiled source: `kind` picks how `key` is read; `label` says where a value came
    from ("attribute:gen_ai.server.time_to_first_token", "event:First Token Stream Event")."""

    kind: Literal["attribute", "json", "event", "event_attribute", "span_name", "scope_name", "since_start"]
    key: str
    label: str
    path: tuple[str, ...] = ()
    event: str = ""
    pattern: re.Pattern[str] | None = None
    scale: float = 1.0
    mapping: dict[str, Any] | None = None
    lower: bool = False
    until_last: str = ""
    present: bool = False
    plus_details: bool = False


def _compile_source(raw: str | SourceSpec, where: str) -> Source:
    spec = SourceSpec(attribute=raw) if isinstance(raw, str) else raw
    mapping = {str(k).lower(): v for k, v in spec.map.items()} or None
    common = {"scale": spec.scale, "mapping": mapping, "lower": spec.lower, "until_last": spec.until_last,
              "present": spec.present}
    if spec.plus_details and not (spec.json and spec.path):
        raise ValueError(f"{where}: plus_details goes with a json source and a path")
    if spec.json:
        return Source("json", spec.json, f"json:{spec.json}", path=tuple(p for p in spec.path.split(".") if p),
                      plus_details=spec.plus_details, **common)
    if spec.event:
        if spec.attribute:
            return Source("event_attribute", spec.attribute, f"event:{spec.event}", event=spec.event, **common)
        return Source("event", "", f"event:{spec.event}", event=spec.event, **common)
    for kind, regex in (("span_name", spec.span_name), ("scope_name", spec.scope_name)):
        if not regex:
            continue
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"{where}: bad {kind} regex: {exc}") from exc
        if pattern.groups < 1:
            raise ValueError(f"{where}: {kind} regex needs one group")
        return Source(kind, "", kind, pattern=pattern, **common)  # type: ignore[arg-type]
    if spec.since_start:
        return Source("since_start", spec.since_start, f"attribute:{spec.since_start}", **common)
    if spec.attribute:
        return Source("attribute", spec.attribute, f"attribute:{spec.attribute}", **common)
    raise ValueError(f"{where}: a source needs attribute, json, event, span_name, scope_name or since_start")


class Rule(msgspec.Struct, frozen=True):
    attribute: str
    values: frozenset[str]
    requires_any: tuple[str, ...]
    scope_prefix: str
    span_name: re.Pattern[str] | None
    event_names: frozenset[str] = frozenset()


class Family(msgspec.Struct):
    name: str
    priority: int
    detect: list[Rule]
    defaults: dict[str, Any]
    sources: dict[str, list[Source]]
    messages: list[MessageSpec]
    usage_excludes: list[UsageExcludes] = []
    unlinked_only: bool = False
    content: list[str] = []
    companions: list[CompanionSpec] = []


class Plan(msgspec.Struct):
    """What to read for spans of one detected family, indexed for speed: a span's attributes
    are looked up in `by_key` (a dozen keys) instead of trying every source of every table."""

    # attribute key -> (field, rank, source); rank orders the sources of one field
    by_key: dict[str, list[tuple[str, int, Source]]]
    # sources that do not read a span attribute: span events and the span name
    keyless: list[tuple[str, int, Source]]
    messages: list[MessageSpec]
    # span attributes that carry messages (exact keys and indexed prefixes)
    message_keys: frozenset[str]
    message_prefixes: tuple[str, ...]
    # key -> carries messages? Bounded; attribute key sets repeat span after span.
    _message_key_cache: dict[str, bool] = {}
    # (a span's attribute keys, has events) -> the fields to read and their sources in rank
    # order (genai.extract_fields). Bounded, for the same reason.
    fields_cache: dict[tuple[tuple[str, ...], bool], list[tuple[str, Any, list[Source]]]] = {}

    def carries_messages(self, key: str) -> bool:
        hit = self._message_key_cache.get(key)
        if hit is None:
            hit = key in self.message_keys or key.startswith(self.message_prefixes)
            if len(self._message_key_cache) > 50_000:
                self._message_key_cache.clear()
            self._message_key_cache[key] = hit
        return hit


def _plan(order: list[Family]) -> Plan:
    by_key: dict[str, list[tuple[str, int, Source]]] = {}
    keyless: list[tuple[str, int, Source]] = []
    ranks: dict[str, int] = {}
    for fam in order:
        for field, srcs in fam.sources.items():
            for src in srcs:
                rank = ranks.get(field, 0)
                ranks[field] = rank + 1
                if src.kind in ("attribute", "json", "since_start"):
                    by_key.setdefault(src.key, []).append((field, rank, src))
                else:
                    keyless.append((field, rank, src))
    specs = [m for fam in order for m in fam.messages]
    # A document read through a `path` holds more than its messages (Logfire's request_data: the
    # system prompt, tools, parameters): it stays in the rows' attributes.
    keys = frozenset(s.attribute for s in specs if s.attribute and not s.event and s.shape != "indexed" and not s.path)
    prefixes = tuple(sorted({s.prefix for s in specs if s.shape == "indexed"}))
    return Plan(by_key, keyless, specs, keys, prefixes, {})


class Conventions:
    """Every family, compiled. Immutable after construction except for bounded caches."""

    def __init__(self, tables: list[FamilyTable], values: CanonicalValues | None = None) -> None:
        self.values = values or CanonicalValues.empty()
        tables = sorted(tables, key=lambda t: t.priority)
        names = [t.name for t in tables]
        if len(names) != len(set(names)):
            raise ValueError(f"two convention tables share a name: {names}")
        self.families: list[Family] = []
        # Families whose calls are log records: detected on records only, read with their own
        # sources only (a record's attributes are no span's).
        self.log_families: list[Family] = []
        vetoes: list[tuple[str, frozenset[str]]] = []
        name_vetoes: list[re.Pattern[str]] = []
        scope_vetoes: list[str] = []
        known: set[str] = set()
        prefixes: set[str] = set()
        for table in tables:
            sources: dict[str, list[Source]] = {}
            for field, raws in table.fields.items():
                if field not in FIELD_TYPES:
                    raise ValueError(f"{table.name}: unknown field {field!r} (known: {', '.join(FIELD_TYPES)})")
                compiled = [_compile_source(r, f"{table.name}.fields.{field}") for r in raws]
                sources[field] = compiled
                for src in compiled:
                    if src.key:
                        known.add(src.key)
            for field in table.defaults:
                if field not in FIELD_TYPES:
                    raise ValueError(f"{table.name}: unknown default {field!r}")
            known.update(rule.attribute for rule in table.detect if rule.attribute)
            for spec in table.messages:
                known.update(spec.attributes())
                if spec.shape == "indexed":
                    if not spec.prefix:
                        raise ValueError(f"{table.name}: indexed messages need a prefix")
                    prefixes.add(spec.prefix)
                if spec.content_part_type and (spec.shape != "indexed" or "{j}" not in spec.content_part_type):
                    raise ValueError(f"{table.name}: `content_part_type` goes with the indexed shape and names "
                                     "part {j}")
                if spec.path and spec.shape != "json":
                    raise ValueError(f"{table.name}: a message `path` goes with the json shape, not {spec.shape}")
                if (spec.function_name or spec.function_arguments) and (
                        spec.shape != "indexed" or not spec.function_name):
                    raise ValueError(f"{table.name}: `function_name` (with `function_arguments`) goes with the "
                                     "indexed shape")
            known.update(table.known)
            prefixes.update(table.known_prefixes)
            logs = table.signal == "logs"
            if table.unlinked_only and not logs:
                raise ValueError(f"{table.name}: `unlinked_only` goes with signal = \"logs\"")
            rules: list[Rule] = []
            for i, r in enumerate(table.detect):
                if logs and (not r.event_name or r.span_name):
                    raise ValueError(f"{table.name}.detect[{i}]: a log-record family detects by `event_name` "
                                     "(with an attribute or scope_prefix if need be)")
                if not logs and r.event_name:
                    raise ValueError(f"{table.name}.detect[{i}]: `event_name` goes with signal = \"logs\"")
                if not logs and not r.attribute and not (r.scope_prefix and r.span_name):
                    raise ValueError(f"{table.name}.detect[{i}]: needs an attribute, or scope_prefix with span_name")
                try:
                    name_re = re.compile(r.span_name) if r.span_name else None
                except re.error as exc:
                    raise ValueError(f"{table.name}.detect[{i}]: bad span_name regex: {exc}") from exc
                rules.append(Rule(r.attribute, frozenset(v.lower() for v in r.in_), tuple(r.requires_any),
                                  r.scope_prefix, name_re, frozenset(r.event_name)))
            for i, r in enumerate(table.not_inference):
                if [bool(r.attribute and r.in_), bool(r.span_name), bool(r.scope_prefix)].count(True) != 1 \
                        or r.requires_any or (r.scope_prefix and (r.attribute or r.in_)):
                    raise ValueError(f"{table.name}.not_inference[{i}]: takes an attribute with `in`, a span_name or "
                                     "a scope_prefix")
                if r.scope_prefix:
                    scope_vetoes.append(r.scope_prefix)
                elif r.span_name:
                    try:
                        name_vetoes.append(re.compile(r.span_name))
                    except re.error as exc:
                        raise ValueError(f"{table.name}.not_inference[{i}]: bad span_name regex: {exc}") from exc
                else:
                    vetoes.append((r.attribute, frozenset(v.lower() for v in r.in_)))
                    known.add(r.attribute)
            for i, usage in enumerate(table.usage_excludes):
                if bool(usage.add) == usage.rest_of_total:
                    raise ValueError(f"{table.name}.usage_excludes[{i}]: takes `add` attributes or `rest_of_total`, "
                                     "one of them")
                if usage.rest_of_total and any(other.field == usage.field for other in table.usage_excludes
                                               if other is not usage):
                    # The rest of the total depends on what the other rule added first.
                    raise ValueError(f"{table.name}.usage_excludes[{i}]: a `rest_of_total` rule must be the only "
                                     f"rule for {usage.field}")
                known.update(usage.add)
            if table.companions and not logs:
                raise ValueError(f"{table.name}: `companions` go with signal = \"logs\"")
            family = Family(table.name, table.priority, rules, table.defaults, sources, table.messages,
                            table.usage_excludes, table.unlinked_only, table.content, table.companions)
            known.update(table.content)
            if logs:
                if table.not_inference:
                    raise ValueError(f"{table.name}: `not_inference` is for span families")
                self.log_families.append(family)
            else:
                self.families.append(family)
        self._vetoes = tuple(vetoes)
        self._name_vetoes = tuple(name_vetoes)
        self._scope_vetoes = tuple(scope_vetoes)
        self._known = frozenset(known)
        self._known_prefixes = tuple(sorted(prefixes))
        self._known_cache: dict[str, bool] = {}
        # Per detected family: its own sources first, then every other family's by priority.
        self._plans: dict[str | None, Plan] = {}
        for first in [None, *self.families]:
            order = ([first] if first else []) + [f for f in self.families if f is not first]
            self._plans[first.name if first else None] = _plan(order)
        for fam in self.log_families:
            self._plans[fam.name] = _plan([fam])
        self._log_event_names = frozenset(name for fam in self.log_families for rule in fam.detect
                                          for name in rule.event_names)
        seen: dict[str, str] = {}
        for fam in self.log_families:
            for companion in fam.companions:
                if seen.setdefault(companion.event_name, companion.key) != companion.key:
                    raise ValueError(f"{fam.name}: companion {companion.event_name!r} is joined by "
                                     f"{seen[companion.event_name]!r} in another table")
        # Companion records are looked for in the scopes their families detect in ("" = any).
        self.companion_events = frozenset(c.event_name for fam in self.log_families for c in fam.companions)
        self.companion_scopes = tuple(sorted({rule.scope_prefix for fam in self.log_families if fam.companions
                                              for rule in fam.detect}))
        # Detection: which attributes can trigger a rule, so most plain spans cost one set test.
        self._detect_keys = frozenset(rule.attribute for fam in self.families for rule in fam.detect)
        self._scope_rules = tuple(rule.scope_prefix for fam in self.families for rule in fam.detect
                                  if not rule.attribute)

    def detect(self, attrs: dict[str, Any], scope_name: str, span_name: str = "") -> Family | None:
        if self._detect_keys.isdisjoint(attrs) and not (self._scope_rules and scope_name.startswith(self._scope_rules)):
            return None
        for fam in self.families:
            for rule in fam.detect:
                if rule.attribute:
                    value = attrs.get(rule.attribute)
                    if value is None:
                        continue
                    if rule.values and not (isinstance(value, str) and value.lower() in rule.values):
                        continue
                if rule.scope_prefix and not scope_name.startswith(rule.scope_prefix):
                    continue
                if rule.span_name is not None and not rule.span_name.search(span_name):
                    continue
                if rule.requires_any and not any(k in attrs for k in rule.requires_any):
                    continue
                return None if self._vetoed(attrs, span_name, scope_name) else fam
        return None

    def detect_record(self, event_name: str, attrs: dict[str, Any], scope_name: str) -> Family | None:
        """The log-record family whose calls a record with this event name is, if any."""
        if event_name not in self._log_event_names:
            return None
        for fam in self.log_families:
            for rule in fam.detect:
                if event_name not in rule.event_names:
                    continue
                if rule.attribute:
                    value = attrs.get(rule.attribute)
                    if value is None or (rule.values and not (isinstance(value, str) and value.lower() in rule.values)):
                        continue
                if rule.scope_prefix and not scope_name.startswith(rule.scope_prefix):
                    continue
                if rule.requires_any and not any(k in attrs for k in rule.requires_any):
                    continue
                return fam
        return None

    def _vetoed(self, attrs: dict[str, Any], span_name: str, scope_name: str) -> bool:
        if self._scope_vetoes and scope_name.startswith(self._scope_vetoes):
            return True
        for attribute, values in self._vetoes:
            value = attrs.get(attribute)
            if isinstance(value, list) and value:  # read as its first item, as fields are
                value = value[0]
            if isinstance(value, str) and value.lower() in values:
                return True
        return any(pattern.search(span_name) for pattern in self._name_vetoes)

    def content_attributes(self) -> tuple[list[str], list[str]]:
        """(keys, prefixes) of the attributes any table reads messages from: what a "no content"
        capture policy drops."""
        families = [*self.families, *self.log_families]
        keys = sorted({a for fam in families for spec in fam.messages for a in spec.attributes()}
                      | {a for fam in families for a in fam.content})
        prefixes = sorted({spec.prefix for fam in families for spec in fam.messages if spec.prefix})
        return keys, prefixes

    def plan(self, family: Family | None) -> Plan:
        return self._plans[family.name if family else None]

    def is_unmapped(self, key: str) -> bool:
        """True for a GenAI-looking attribute that no table reads or lists as known."""
        hit = self._known_cache.get(key)
        if hit is not None:
            return hit
        result = key.startswith(GENAI_PREFIXES) and key not in self._known and not key.startswith(self._known_prefixes)
        if len(self._known_cache) > 50_000:
            self._known_cache.clear()
        self._known_cache[key] = result
        return result


def load_tables(folder: Path | None = None) -> list[FamilyTable]:
    folder = folder or semconv_dir()
    tables: list[FamilyTable] = []
    for path in sorted(folder.glob("*.toml")):
        if path.name in ("pricing.toml", VALUES_FILE):
            continue
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
            tables.append(msgspec.convert(raw, FamilyTable))
        except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"convention table {path.name}: {exc}") from exc
    return tables


def tables_digest(folder: Path | None = None) -> str:
    """A digest of the convention tables' files (which spans a family claims depends on them)."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted((folder or semconv_dir()).glob("*.toml")):
        if path.name != "pricing.toml":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_conventions(folder: Path | None = None) -> Conventions:
    return Conventions(load_tables(folder), CanonicalValues.load(folder))
