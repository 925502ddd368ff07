"""Retention (docs/privacy.md, "Retention"): how long each kind of data is kept, per project.

Three kinds, each a number of days counted from when otelgw stored the row (`ingested_at`, or
`stored_at` in the tables a materialized view fills):

- content: message text, span events, raw attributes (`messages` rows; the preview and attribute
  columns of `inferences`, the attribute and event columns of `spans`, the body and attributes of
  `logs`, feedback comments, the example values of `unmapped_attributes`), default 30 days;
- spans: trace detail (`spans`, `logs`, `span_tag_names` rows), default 14 days;
- numbers: `inferences` rows (tokens, cost, latency), `feedback`, `metric_points`, the analytics
  rollups and `inference_lookup`, default 400 days.

ClickHouse deletes the data itself, through TTL, during merges; there is no delete loop. A TTL
expression cannot read a table or call a dictionary (ClickHouse refuses dictGet there as
non-deterministic), so the per-project values are written into the expressions as literals:

    TTL toDateTime(ingested_at)
        + toIntervalDay(transform(project_id, ['a', 'b'], CAST([7, 90], 'Array(UInt16)'), toUInt16(30)))

The policies live in `project_retention` (the row for project `*` holds the defaults); setting one
stores the row, then re-writes the TTL of the tables whose expression changed (`ALTER TABLE ...
MODIFY TTL`, `MODIFY COLUMN ... TTL`). The tables have `materialize_ttl_recalculate_only = 1`
(schema/008), so the ALTER only recomputes each part's TTL bounds (reading `project_id` and the
clock column), and the background merges then drop the expired rows.

`RetentionStore` is blocking: call it from a worker thread or the CLI.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from otelgw.store.client import quote_string
from otelgw.store.cluster import ddl_target
from otelgw.store.keys import MAX_PROJECT_LEN, is_project_name

DEFAULTS_PROJECT = "*"
KINDS = ("content_days", "numbers_days", "spans_days")
# TTLs are DateTime arithmetic, which ends in 2106: a longer period would wrap to a past date and
# expire everything at once. Ten thousand days (27 years) stays clear of that until ~2079.
MAX_DAYS = 10_000
# Serialises changes within a process (the API runs them on a thread pool): the TTLs written are
# always computed from every stored policy, after the write. Across gateways, the last change wins
# and holds them all; `otelgw retention apply` repairs a store by hand.
_CHANGES = threading.Lock()


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True, rename={"project": "project_id"}):
    """Days each kind of data is kept, for one project (`*`: the defaults)."""
    project: str
    content_days: int
    numbers_days: int
    spans_days: int

    def days(self, kind: str) -> int:
        return getattr(self, kind)


BUILTIN_DEFAULTS = RetentionPolicy(project=DEFAULTS_PROJECT, content_days=30, numbers_days=400, spans_days=14)


class InvalidPolicy(ValueError):
    """What is wrong, by field name."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems.items()))
        self.problems = problems


def validate(policy: RetentionPolicy) -> None:
    problems: dict[str, str] = {}
    project = policy.project
    if not is_project_name(project):
        problems["project_id"] = f"must be 1 to {MAX_PROJECT_LEN} printable characters ('*' for the defaults)"
    for kind in KINDS:
        value = policy.days(kind)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            problems[kind] = f"must be a whole number of days from 1 to {MAX_DAYS}"
    if not problems:
        # Messages and span detail hang off inference rows: they may not outlive them.
        if policy.content_days > policy.numbers_days:
            problems["content_days"] = f"must not exceed numbers_days ({policy.numbers_days})"
        if policy.spans_days > policy.numbers_days:
            problems["spans_days"] = f"must not exceed numbers_days ({policy.numbers_days})"
    if problems:
        raise InvalidPolicy(problems)


class Rule(msgspec.Struct, frozen=True):
    """One TTL: the rows of `table` (no columns) or the given columns, kept `kind` days after `clock`."""
    table: str
    clock: str
    kind: str
    columns: tuple[str, ...] = ()


RULES: tuple[Rule, ...] = (
    Rule("messages", "ingested_at", "content_days"),
    Rule("inferences", "ingested_at", "content_days", ("input_preview", "output_preview", "attributes")),
    Rule("inferences", "ingested_at", "numbers_days"),
    Rule("inference_lookup", "stored_at", "numbers_days"),
    Rule("feedback", "ingested_at", "content_days", ("comment",)),
    Rule("feedback", "ingested_at", "numbers_days"),
    Rule("inference_stats_1m", "stored_at", "numbers_days"),
    Rule("inference_stats_1h", "stored_at", "numbers_days"),
    Rule("inference_stats_1d", "stored_at", "numbers_days"),
    Rule("metric_points", "ingested_at", "numbers_days"),
    Rule("spans", "ingested_at", "content_days", ("attributes", "events")),
    Rule("spans", "ingested_at", "spans_days"),
    Rule("logs", "ingested_at", "content_days", ("body", "attributes")),
    Rule("logs", "ingested_at", "spans_days"),
    Rule("span_tag_names", "stored_at", "spans_days"),
    Rule("unmapped_attributes", "stored_at", "content_days"),
)
TABLES: tuple[str, ...] = tuple(dict.fromkeys(rule.table for rule in RULES))


def days_expression(kind: str, defaults: RetentionPolicy, projects: list[RetentionPolicy]) -> str:
    """The days of `kind` for a row's project_id: the default as a literal, or a `transform` over
    the projects whose value differs from it."""
    default = defaults.days(kind)
    differing = sorted((p.project, p.days(kind)) for p in projects
                       if p.project != DEFAULTS_PROJECT and p.days(kind) != default)
    if not differing:
        return str(default)
    names = ", ".join(quote_string(name) for name, _ in differing)
    values = ", ".join(str(days) for _, days in differing)
    return f"transform(project_id, [{names}], CAST([{values}], 'Array(UInt16)'), toUInt16({default}))"


def ttl_statements(defaults: RetentionPolicy, projects: list[RetentionPolicy],
                   cluster: str | None = None) -> dict[str, str]:
    """table -> the ALTER that sets its TTLs (column TTLs first: a table TTL is a list, so
    nothing may follow it in the same ALTER)."""
    commands: dict[str, list[str]] = {table: [] for table in TABLES}
    table_ttl: dict[str, str] = {}
    for rule in RULES:
        expression = f"toDateTime({rule.clock}) + toIntervalDay({days_expression(rule.kind, defaults, projects)})"
        if rule.columns:
            commands[rule.table].extend(f"MODIFY COLUMN {column} TTL {expression}" for column in rule.columns)
        else:
            table_ttl[rule.table] = f"MODIFY TTL {expression}"
    return {table: f"ALTER TABLE {ddl_target(table, cluster)} " + ", ".join([*commands[table], table_ttl[table]])
            for table in TABLES}


class RetentionSettings(msgspec.Struct, frozen=True):
    defaults: RetentionPolicy
    projects: list[RetentionPolicy]  # projects with a policy of their own, by name

    def effective(self, project: str) -> RetentionPolicy:
        """The policy that applies to `project` (its own, or the defaults under its name)."""
        if project == DEFAULTS_PROJECT:
            return self.defaults
        own = next((p for p in self.projects if p.project == project), None)
        return own or msgspec.structs.replace(self.defaults, project=project)

    def has_own(self, project: str) -> bool:
        return any(p.project == project for p in self.projects)


def with_changes(current: RetentionPolicy, **days: int | None) -> RetentionPolicy:
    """`current` with the given kinds replaced (None: kept)."""
    return msgspec.structs.replace(current, **{k: v for k, v in days.items() if v is not None})


class RetentionStore:
    """Policies in `project_retention`, enforced as the TTLs of the data tables.

    A change is a newer row for the project (argMax by updated_at); `deleted` drops a project's
    own policy so it follows the defaults again. `wait=True` waits for the TTL recomputation of
    existing parts (mutations_sync) instead of leaving it to the background."""

    def __init__(self, client: Client, *, cluster: str | None = None, wait: bool = False) -> None:
        self._client = client
        self._cluster = cluster
        self._settings: dict[str, Any] = {"mutations_sync": 2} if wait else {}

    def get_all(self) -> RetentionSettings:
        rows = self._client.query(
            "SELECT project_id, argMax(tuple(content_days, numbers_days, spans_days, deleted), updated_at) AS p "
            "FROM project_retention GROUP BY project_id ORDER BY project_id").result_rows
        defaults = BUILTIN_DEFAULTS
        projects: list[RetentionPolicy] = []
        for project, (content, numbers, spans, deleted) in rows:
            if deleted:
                continue
            policy = RetentionPolicy(project=project, content_days=content, numbers_days=numbers, spans_days=spans)
            if project == DEFAULTS_PROJECT:
                defaults = policy
            else:
                projects.append(policy)
        return RetentionSettings(defaults, projects)

    def get(self, project: str) -> RetentionPolicy:
        return self.get_all().effective(project)

    def set(self, policy: RetentionPolicy, *, by: str = "") -> RetentionPolicy:
        """Store `policy` (project `*`: the defaults) and re-write every table's TTL from all
        stored policies: a change that failed half-way, or raced another, is repaired by the next."""
        validate(policy)
        with _CHANGES:
            self._write(policy, deleted=False, by=by)
            self.apply()
        return policy

    def unset(self, project: str, *, by: str = "") -> bool:
        """Drop `project`'s own policy (it follows the defaults again); `*` resets the defaults to
        the built-in ones. False when there was nothing to drop."""
        with _CHANGES:
            before = self.get_all()
            if project != DEFAULTS_PROJECT and not before.has_own(project):
                return False
            self._write(before.effective(project), deleted=True, by=by)
            self.apply()
        return True

    def apply(self) -> list[str]:
        """Re-write every table's TTL from the stored policies (after a failed or concurrent
        change, or on a new replica); returns the tables altered."""
        settings = self.get_all()
        statements = ttl_statements(settings.defaults, settings.projects, self._cluster)
        for statement in statements.values():
            # Each differing project's name is in each column's TTL: with a few hundred projects
            # the ALTER outgrows the default max_query_size (256 KiB), and every change failed.
            self._client.command(statement, settings={**self._settings,
                                                      "max_query_size": max(262_144,
                                                                            2 * len(statement.encode()))})
        return list(statements)

    def _write(self, policy: RetentionPolicy, *, deleted: bool, by: str) -> None:
        latest = self._client.query(
            "SELECT max(updated_at) FROM project_retention WHERE project_id = {p:String}",
            parameters={"p": policy.project}).result_rows
        now = datetime.now(UTC)
        last = latest[0][0] if latest and latest[0][0] is not None else None
        if last is not None:
            last = last if last.tzinfo else last.replace(tzinfo=UTC)
            if last.timestamp() >= now.timestamp():
                # A newer version must win in argMax: one millisecond past the last one.
                now = datetime.fromtimestamp(last.timestamp() + 0.001, UTC)
        self._client.insert(
            "project_retention",
            [[policy.project, policy.content_days, policy.numbers_days, policy.spans_days, deleted, by, now]],
            column_names=["project_id", "content_days", "numbers_days", "spans_days", "deleted", "updated_by",
                          "updated_at"])
