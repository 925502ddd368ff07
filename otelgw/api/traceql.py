"""A TraceQL subset, compiled to ClickHouse SQL over the `spans` table.

Supported: span sets `{ ... }` joined by `&&` / `||`; inside a set, comparisons joined by `&&`,
`||` and parentheses; operators `= != > >= < <= =~ !~`; intrinsics `name`, `status`, `kind`,
`duration`, `statusMessage`, `rootName`, `rootServiceName`, `traceDuration`; attributes scoped
`span.`, `resource.` or unscoped `.`; string, integer, float, duration (`ns us ms s m h`),
status (`ok error unset`), kind and boolean literals. Anything else is a TraceQLError with the
position of the unsupported part (HTTP 400).

Each span set becomes a `countIf(<condition>) > 0` over a trace's spans; the span-set operators
combine those in HAVING, so a query is one GROUP BY trace_id. Values are bound as query
parameters, never written into the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec


class TraceQLError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)(?![\w.]))
  | (?P<number>-?\d+(?:\.\d+)?(?![\w]))
  | (?P<op>&&|\|\||=~|!~|!=|>=|<=|=|>|<)
  | (?P<punct>[{}()])
  | (?P<ident>\.?[A-Za-z_][\w.\-/:]*)
""", re.VERBOSE)

DURATION_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
               "h": 3_600_000_000_000}
SPAN_INTRINSICS = {"name": "name", "status": "status_code", "kind": "kind", "duration": "duration_ns",
                   "statusMessage": "status_message"}
TRACE_INTRINSICS = {"rootName": "t.root_name", "rootServiceName": "t.root_service",
                    "traceDuration": "t.trace_duration_ns"}
STATUS_VALUES = {"ok", "error", "unset"}
KIND_VALUES = {"unspecified", "internal", "server", "client", "producer", "consumer"}
OPS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class Token(msgspec.Struct):
    kind: str
    text: str
    pos: int


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None:
            raise TraceQLError(f"unexpected {query[pos]!r}", pos)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(query)))
    return tokens


class Compiled(msgspec.Struct):
    having: str
    any_match: str
    params: dict[str, Any]
    attributes: list[tuple[str, str]]  # (display key, SQL expression) to show on matched spans
    needs_trace: bool


# Bounds on a query's shape: the parser recurses once per parenthesis, and ClickHouse's own
# parser refuses SQL nested past ~1000 levels.
MAX_DEPTH = 32
MAX_TOKENS = 2000
MAX_PATTERN_CHARS = 1000


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = tokenize(query)
        if len(self.tokens) > MAX_TOKENS:
            raise TraceQLError(f"query too long (more than {MAX_TOKENS} tokens)", 0)
        self.depth = 0
        self.i = 0
        self.params: dict[str, Any] = {}
        self.attributes: dict[str, str] = {}
        self.spanset_conditions: list[str] = []
        self.needs_trace = False

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self, text: str | None = None) -> Token:
        token = self.tokens[self.i]
        if text is not None and token.text != text:
            found = token.text or "end of query"
            raise TraceQLError(f"expected {text!r}, found {found!r}", token.pos)
        self.i += 1
        return token

    def param(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"

    # query := spanset_expr
    def query(self) -> str:
        expr = self.spanset_or()
        if self.peek().kind != "end":
            token = self.peek()
            raise TraceQLError(f"unsupported {token.text!r}", token.pos)
        return expr

    def chain(self, operator: str, sql: str, operand: Callable[[], str]) -> str:
        """`a op b op c` as one flat SQL group (nested pairs would nest as deep as the chain is
        long, past ClickHouse's parser depth)."""
        parts = [operand()]
        while self.peek().text == operator:
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else "(" + f" {sql} ".join(parts) + ")"

    def spanset_or(self) -> str:
        return self.chain("||", "OR", self.spanset_and)

    def spanset_and(self) -> str:
        return self.chain("&&", "AND", self.spanset_atom)

    def open_paren(self) -> None:
        token = self.take("(")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TraceQLError(f"parentheses nest deeper than {MAX_DEPTH}", token.pos)

    def close_paren(self) -> None:
        self.take(")")
        self.depth -= 1

    def spanset_atom(self) -> str:
        token = self.peek()
        if token.text == "(":
            self.open_paren()
            inner = self.spanset_or()
            self.close_paren()
            return inner
        if token.text != "{":
            raise TraceQLError(f"expected a span set {{ ... }}, found {token.text or 'end of query'!r}", token.pos)
        self.take("{")
        condition = "1" if self.peek().text == "}" else self.cond_or()
        self.take("}")
        self.spanset_conditions.append(condition)
        return f"countIf({condition}) > 0"

    def cond_or(self) -> str:
        return self.chain("||", "OR", self.cond_and)

    def cond_and(self) -> str:
        return self.chain("&&", "AND", self.cond_atom)

    def cond_atom(self) -> str:
        if self.peek().text == "(":
            self.open_paren()
            inner = self.cond_or()
            self.close_paren()
            return inner
        return self.comparison()

    def field(self) -> tuple[str, str, str]:
        """(SQL expression, value domain: str|num|status|kind, display key)."""
        token = self.take()
        if token.kind != "ident":
            raise TraceQLError(f"expected a field, found {token.text or 'end of query'!r}", token.pos)
        text = token.text
        if text in SPAN_INTRINSICS:
            domain = {"status": "status", "kind": "kind", "duration": "num"}.get(text, "str")
            return SPAN_INTRINSICS[text], domain, text
        if text in TRACE_INTRINSICS:
            self.needs_trace = True
            return TRACE_INTRINSICS[text], "num" if text == "traceDuration" else "str", text
        for prefix, column in (("span.", "attributes"), ("resource.", "resource_attributes")):
            if text.startswith(prefix) and len(text) > len(prefix):
                key = text[len(prefix):]
                if column == "resource_attributes" and key == "service.name":
                    expr = "service_name"
                else:
                    expr = f"{column}[{self.param(key, 'String')}]"
                self.attributes[text] = expr
                return expr, "str", text
        if text.startswith(".") and len(text) > 1:
            key = self.param(text[1:], "String")
            expr = f"if(mapContains(attributes, {key}), attributes[{key}], resource_attributes[{key}])"
            self.attributes[text] = expr
            return expr, "str", text
        raise TraceQLError(f"unsupported field {text!r} (use span., resource. or . before attribute names)",
                           token.pos)

    def comparison(self) -> str:
        expr, domain, _ = self.field()
        op_token = self.take()
        if op_token.kind != "op" or op_token.text in ("&&", "||"):
            raise TraceQLError(f"expected a comparison operator, found {op_token.text or 'end of query'!r}",
                               op_token.pos)
        op = op_token.text
        value = self.take()
        if op in ("=~", "!~"):
            if value.kind != "string":
                raise TraceQLError("a regular expression must be a string", value.pos)
            pattern = _unquote(value.text)
            if len(pattern) > MAX_PATTERN_CHARS:
                raise TraceQLError(f"regular expression longer than {MAX_PATTERN_CHARS} characters", value.pos)
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}; deep groups
                raise TraceQLError(f"bad regular expression: {exc}", value.pos) from exc
            test = f"match({expr}, {self.param(f'^(?:{pattern})$', 'String')})"
            return test if op == "=~" else f"NOT {test}"
        if domain == "num" and value.kind not in ("duration", "number"):
            raise TraceQLError(f"{value.text or 'end of query'!r}: a duration compares with a duration (100ms) "
                               "or a number of nanoseconds", value.pos)
        if value.kind == "duration":
            number, unit = re.match(r"([\d.]+)(\D+)", value.text).groups()  # type: ignore[union-attr]
            nanos = duration_ns(float(number), unit)
            if domain != "num":
                expr = f"toFloat64OrNull({expr})"
            return f"{expr} {OPS[op]} {self.param(nanos, 'Int64')}"
        if value.kind == "number":
            number = float(value.text)
            target = expr if domain == "num" else f"toFloat64OrNull({expr})"
            return f"{target} {OPS[op]} {self.param(number, 'Float64')}"
        if value.kind == "string":
            return f"{expr} {OPS[op]} {self.param(_unquote(value.text), 'String')}"
        if value.kind == "ident":
            word = value.text
            if domain == "status" and word in STATUS_VALUES or domain == "kind" and word in KIND_VALUES:
                return f"{expr} {OPS[op]} {self.param(word, 'String')}"
            if word in ("true", "false"):
                return f"{expr} {OPS[op]} {self.param(word, 'String')}"
        raise TraceQLError(f"unsupported value {value.text or 'end of query'!r}", value.pos)


def duration_ns(number: float, unit: str) -> int:
    """`number` `unit`s in ns; past Int64 (longer than any span) is the largest."""
    ns = number * DURATION_NS[unit]
    return int(ns) if ns < 2**63 else 2**63 - 1


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def compile_query(query: str) -> Compiled:
    parser = _Parser(query.strip() or "{}")
    having = parser.query()
    any_match = " OR ".join(f"({c})" for c in parser.spanset_conditions) or "1"
    return Compiled(having=having, any_match=any_match, params=parser.params,
                    attributes=list(parser.attributes.items()), needs_trace=parser.needs_trace)


def tags_to_query(tags: str) -> str:
    """Tempo's legacy `tags` parameter (logfmt: key=value key2="value 2") as a TraceQL span set."""
    parts = []
    for match in re.finditer(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)', tags):
        key, value = match.group(1), match.group(2)
        if not value.startswith('"'):
            value = '"' + value.replace('"', '\\"') + '"'
        if key in SPAN_INTRINSICS and key != "name":
            parts.append(f"{key} = {value.strip(chr(34))}")
        elif key == "name":
            parts.append(f"name = {value}")
        else:
            parts.append(f".{key} = {value}")
    return "{ " + " && ".join(parts) + " }" if parts else "{}"
