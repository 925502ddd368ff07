"""Token prices (USD per million tokens) from semconv/pricing.toml, optionally overridden by a
user table, and the cost of one inference."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from otelgw.resources import semconv_dir

# Bedrock model ids: an optional cross-region inference profile ("us.", "global.") and the vendor
# before the model's own name ("us.anthropic.claude-sonnet-4-5-20250929-v1:0"; an
# inference-profile ARN ends in one). Tried after the id as written (a pricing file may name
# Bedrock ids itself) and only for Anthropic, whose Bedrock list prices are its API's (other
# vendors' are not: Mistral's differ).
_BEDROCK_ID = re.compile(r"^(?:(?:us|eu|apac|au|ca|jp|us-gov|global)\.)?anthropic\.")


class Price(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    input: float
    output: float
    cached_input: float | None = None
    # Writing to the prompt cache (Anthropic: 1.25x input for 5-minute entries); default: input.
    cache_write: float | None = None


class _PricingFile(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, Price] = {}


class Pricing:
    def __init__(self, models: dict[str, Price]) -> None:
        self._exact = {k.lower(): v for k, v in models.items() if not k.endswith("*")}
        # Longest prefix first, so "gpt-4o-mini*" wins over "gpt-4o*".
        self._prefixes = sorted(
            ((k[:-1].lower(), v) for k, v in models.items() if k.endswith("*")), key=lambda kv: -len(kv[0])
        )
        self._cache: dict[str, Price | None] = {}

    @classmethod
    def load(cls, override: str | Path | None = None) -> Pricing:
        models = _read(semconv_dir() / "pricing.toml")
        if override:
            models.update(_read(Path(override)))
        return cls(models)

    def lookup(self, model: str) -> Price | None:
        if not model:
            return None
        found = self._cache.get(model, False)
        if found is not False:
            return found  # type: ignore[return-value]
        name = model.lower().rsplit("/", 1)[-1]
        price = self._match(name)
        if price is None and _BEDROCK_ID.match(name):
            price = self._match(_BEDROCK_ID.sub("", name))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[model] = price
        return price

    def _match(self, name: str) -> Price | None:
        price = self._exact.get(name)
        if price is None:
            for prefix, candidate in self._prefixes:
                if name.startswith(prefix):
                    return candidate
        return price

    def cost(self, model: str, input_tokens: int, cached_input_tokens: int, output_tokens: int,
             cache_write_input_tokens: int = 0) -> float | None:
        """USD for one call. Input tokens include those read from and written to the prompt
        cache, as OTel's gen_ai.usage.input_tokens does, so each is priced at its own rate."""
        price = self.lookup(model)
        if price is None:
            return None
        total = max(input_tokens, 0)
        cached = min(max(cached_input_tokens, 0), total)
        written = min(max(cache_write_input_tokens, 0), total - cached)
        uncached = total - cached - written
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        write_rate = price.cache_write if price.cache_write is not None else price.input
        return (uncached * price.input + cached * cached_rate + written * write_rate
                + max(output_tokens, 0) * price.output) / 1_000_000


def _read(path: Path) -> dict[str, Price]:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        return dict(msgspec.convert(raw, _PricingFile).models)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"pricing table {path}: {exc}") from exc
