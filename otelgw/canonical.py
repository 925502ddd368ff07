"""Canonical finish reasons and providers, from semconv/values.toml: one spelling per meaning,
whichever library sent the call, so listings, filters and analytics do not split one provider
or one kind of ending into several."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import msgspec

from otelgw.resources import semconv_dir

VALUES_FILE = "values.toml"
# Longer "model names" are not read (a hostile value must cost nothing).
MAX_MODEL_CHARS = 256
# Enum reprs some libraries send as the value ("FinishReason.STOP": google-genai's enum).
_ENUM_PREFIXES = ("finishreason.", "stopreason.")


class _Providers(msgspec.Struct, forbid_unknown_fields=True):
    aliases: dict[str, str] = {}
    hosts: dict[str, str] = {}
    routers: list[str] = []
    vendors: list[str] = []
    clouds: list[str] = []
    model_prefixes: dict[str, str] = {}
    models: dict[str, str] = {}


class _ValuesFile(msgspec.Struct, forbid_unknown_fields=True):
    finish_reasons: dict[str, list[str]] = {}
    providers: _Providers = msgspec.field(default_factory=_Providers)
    roles: dict[str, str] = {}


class CanonicalValues:
    """Lookups built once from the table; immutable but for bounded caches of model and host names."""

    def __init__(self, table: _ValuesFile) -> None:
        self._reasons: dict[str, str] = {}
        self._spellings: dict[str, list[str]] = {}
        for canonical, spellings in table.finish_reasons.items():
            self._spellings[canonical] = list(dict.fromkeys([canonical, *spellings]))
            for raw in [canonical, *spellings]:
                known = self._reasons.setdefault(raw.lower(), canonical)
                if known != canonical:
                    raise ValueError(f"finish reason {raw!r} is listed under both {known!r} and {canonical!r}")
        self._routers = frozenset(r.lower() for r in table.providers.routers)
        self._aliases = {k.lower(): v for k, v in table.providers.aliases.items()}
        # "api.groq.com" names a host, ".openai.azure.com" every host ending so, and a key with a
        # "*" inside ("bedrock-runtime.*.amazonaws.com") the hosts it matches.
        hosts = {k.lower(): v for k, v in table.providers.hosts.items()}
        self._hosts = {k: v for k, v in hosts.items() if not k.startswith(".") and "*" not in k}
        self._host_suffixes = tuple((k, v) for k, v in hosts.items() if k.startswith(".") and "*" not in k)
        self._host_globs = tuple((k, v) for k, v in hosts.items() if "*" in k)
        self._vendors = frozenset(v.lower() for v in table.providers.vendors)
        self._clouds = frozenset(c.lower() for c in table.providers.clouds)
        self._roles = {k.lower(): v for k, v in table.roles.items()}
        self._by_prefix = {k.lower(): v for k, v in table.providers.model_prefixes.items()}
        models = {k.lower(): v for k, v in table.providers.models.items()}
        self._exact = {k: v for k, v in models.items() if "*" not in k}
        # Longest first, so "mistral.*" (Bedrock) is tried before a shorter pattern could claim it;
        # a "*" elsewhere than at the end makes a glob ("claude-*@*": Vertex's model ids), tried
        # first, over the whole name (a Vertex resource path has slashes).
        self._patterns = sorted(((k[:-1], v) for k, v in models.items() if k.endswith("*") and "*" not in k[:-1]),
                                key=lambda kv: -len(kv[0]))
        self._model_globs = tuple(sorted(((k, v) for k, v in models.items() if "*" in k[:-1]),
                                         key=lambda kv: -len(kv[0])))
        self._model_cache: dict[str, str] = {}
        self._host_cache: dict[str, str] = {}

    @classmethod
    def empty(cls) -> CanonicalValues:
        return cls(_ValuesFile())

    @classmethod
    def load(cls, folder: Path | None = None) -> CanonicalValues:
        path = (folder or semconv_dir()) / VALUES_FILE
        if not path.exists():
            return cls.empty()
        try:
            with open(path, "rb") as fh:
                return cls(msgspec.convert(tomllib.load(fh), _ValuesFile))
        except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"convention table {VALUES_FILE}: {exc}") from exc

    def finish_reason(self, raw: str) -> str:
        if not raw:
            return raw
        key = raw.strip().lower()
        for prefix in _ENUM_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        return self._reasons.get(key, key)

    def finish_reason_spellings(self, value: str) -> list[str]:
        """Every value a stored row may hold for `value`'s finish reason: the canonical one, and
        the spellings rows stored before canonical values (or by an older table) may carry, as
        sent (lower and upper case, Gemini's enum forms)."""
        canonical = self.finish_reason(value)
        out: list[str] = []
        for raw in self._spellings.get(canonical, [canonical]):
            out += [raw, raw.upper(), f"FinishReason.{raw.upper()}"]
        return list(dict.fromkeys(out))

    def is_router(self, provider: str) -> bool:
        return provider.lower() in self._routers

    def role(self, raw: str) -> str:
        return self._roles.get(raw.lower(), raw) if raw else raw

    def provider(self, reported: str, *models: str, host: str = "") -> str:
        """The reported provider in the conventions' name — unless it is empty, a router's name,
        or a model maker's (`vendors`: "openai", "anthropic") said of a call a cloud served: then
        the host the client called (`server.address`: Azure OpenAI, Bedrock, Vertex, an
        OpenAI-compatible API) or the cloud's form of the model id (Bedrock's
        `us.anthropic.…-v1:0`, Vertex's `claude-…@2025…`); an empty or router's provider also
        takes the model's maker from its name (the reported name when nothing says more)."""
        reported = self._aliases.get(reported.lower(), reported) if reported else reported
        vendor = reported.lower() in self._vendors if reported else False
        open_ = not reported or self.is_router(reported)
        if vendor or open_:
            served = self._for_host(host) if host else ""
            if served:
                return served
        if vendor:
            for model in models:
                found = self._for_model(model) if model else ""
                if found in self._clouds:
                    return found
            return reported
        if not open_:
            return reported
        for model in models:
            found = self._for_model(model) if model else ""
            if found:
                return found
        return reported

    def _for_host(self, host: str) -> str:
        if len(host) > MAX_MODEL_CHARS:
            return ""
        found = self._host_cache.get(host)
        if found is not None:
            return found
        name = host.strip().lower()
        name = name.rsplit(":", 1)[0] if ":" in name else name
        found = (self._hosts.get(name) or next((v for suffix, v in self._host_suffixes if name.endswith(suffix)), "")
                 or next((v for pattern, v in self._host_globs if fnmatch.fnmatchcase(name, pattern)), ""))
        if len(self._host_cache) > 10_000:
            self._host_cache.clear()
        self._host_cache[host] = found
        return found

    def _for_model(self, model: str) -> str:
        if len(model) > MAX_MODEL_CHARS:
            return ""  # no model has such a name; neither the work nor the cache is spent on it
        found = self._model_cache.get(model)
        if found is not None:
            return found
        name = model.strip().lower()
        found = next((v for pattern, v in self._model_globs if fnmatch.fnmatchcase(name, pattern)), "")
        # "provider/model"; past a prefix no table names ("openrouter/anthropic/…", a
        # deployment's own "team/model"), the rest. A Bedrock ARN is one name with slashes.
        if not found and "/" in name and not name.startswith("arn:"):
            parts = name.split("/")
            found = next((self._by_prefix[p] for p in parts[:-1] if p in self._by_prefix), "")
            name = parts[-1]
        if not found:
            found = self._exact.get(name, "") or next((v for p, v in self._patterns if name.startswith(p)), "")
        if len(self._model_cache) > 10_000:
            self._model_cache.clear()
        self._model_cache[model] = found
        return found
