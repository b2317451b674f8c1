"""Model prices from ``genai-prices``, resolved once per model and applied with integers.

``genai-prices`` computes in ``Decimal`` and matches the model on every call (tens of
microseconds). Here each model's price is resolved once into integer pico-dollars per token, per
token class and long-context tier, so pricing on the hot path is a dict hit and a few integer
multiplications. The result agrees with ``genai_prices.calc_price`` to the nano-dollar (a test
checks it over random usage).
"""

from __future__ import annotations

import difflib
import functools
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

from prism_limiter.engine import _validate
from prism_limiter.engine._money import pico_to_nano_ceil
from prism_limiter.errors import InvalidRequest

# Token classes priced here, with the genai-prices price key of each.
CLASSES = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
_PRICE_KEYS = {
    "input": "input_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
}
_PICO_PER_USD_PER_MTOK = Decimal(1_000_000)  # $1/MTok == 1e-6 $/token == 1e6 pico$/token


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one call. ``input_tokens`` is the *total* input, cache counts included.

    ``cache_write_tokens`` counts every cache write; ``cache_write_1h_tokens`` is the part of it
    written with a one-hour lifetime (Anthropic), priced separately where the model has a price.

    Checked when built: every count is an int (not a bool or float) from 0 to 100 million,
    ``cache_read_tokens + cache_write_tokens <= input_tokens`` and
    ``cache_write_1h_tokens <= cache_write_tokens``; otherwise ``InvalidRequest`` names the field.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        # One expression on the hot path; the slow path finds the culprit and names it.
        i, o, r = self.input_tokens, self.output_tokens, self.cache_read_tokens
        w, w1 = self.cache_write_tokens, self.cache_write_1h_tokens
        if not (
            type(i) is int
            and type(o) is int
            and type(r) is int
            and type(w) is int
            and type(w1) is int
            and 0 <= i <= _MAX_TOKENS
            and 0 <= o <= _MAX_TOKENS
            and r >= 0
            and w >= w1 >= 0
            and r + w <= i
        ):
            self._check_slowly()

    def _check_slowly(self) -> None:
        for field in _USAGE_FIELDS:
            # Raises, or returns an int subclass (IntEnum) as a plain int.
            msgspec.structs.force_setattr(
                self, field, _validate.tokens(field, getattr(self, field))
            )
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise InvalidRequest(
                "cache_read_tokens + cache_write_tokens cannot exceed input_tokens (the total"
                f" input): {self.cache_read_tokens} + {self.cache_write_tokens} >"
                f" {self.input_tokens}"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise InvalidRequest(
                "cache_write_1h_tokens cannot exceed cache_write_tokens:"
                f" {self.cache_write_1h_tokens} > {self.cache_write_tokens}"
            )


_USAGE_FIELDS = TokenUsage.__struct_fields__
_MAX_TOKENS = _validate.MAX_TOKENS


@dataclass(frozen=True, slots=True)
class ClassPrice:
    """Pico-dollars per token: ``base`` until total input exceeds a tier's start."""

    base: int
    tiers: tuple[tuple[int, int], ...] = ()  # (start, pico per token), ascending

    def at(self, total_input: int) -> int:
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's resolved prices; a class without a price is billed as plain input."""

    model: str
    provider: str | None
    classes: dict[str, ClassPrice]

    def cost_nano(self, usage: TokenUsage) -> int:
        """Cost of ``usage`` in nano-dollars, rounded up."""
        return self._cost_nano(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
        )

    def _cost_nano(self, total_in: int, out: int, read: int, write: int, write_1h: int) -> int:
        c = self.classes
        cw1h = write_1h if "cache_write_1h" in c else 0
        cw = write - cw1h if "cache_write" in c else 0
        cr = read if "cache_read" in c else 0
        leaves = {
            "input": total_in - cr - cw - cw1h,
            "cache_read": cr,
            "cache_write": cw,
            "cache_write_1h": cw1h,
            "output": out,
        }
        pico = 0
        for cls, count in leaves.items():
            if count and cls in c:
                pico += count * c[cls].at(total_in)
        return pico_to_nano_ceil(pico)

    def hold_nano(
        self,
        est_input_tokens: int,
        max_output_tokens: int,
        max_cache_write_tokens: int | None = None,
    ) -> int:
        """The upper bound held at reserve, whatever usage shape the provider returns.

        Output is priced at its maximum. Input that may be written to the prompt cache
        (``max_cache_write_tokens``; ``None``: all of it) is priced at the model's dearest input
        class (a one-hour cache write costs 2x input at Anthropic), the rest at the plain input
        rate (a cache read is never dearer). Every class at the tier ``est_input_tokens`` reaches.
        """
        c = self.classes
        total = est_input_tokens
        writes = total if max_cache_write_tokens is None else min(total, max_cache_write_tokens)
        plain = c["input"].at(total) if "input" in c else 0
        dearest = max((c[k].at(total) for k in _INPUT_CLASSES if k in c), default=0)
        out = c["output"].at(total) if "output" in c else 0
        pico = (total - writes) * plain + writes * dearest + max_output_tokens * out
        return pico_to_nano_ceil(pico)


_INPUT_CLASSES = ("input", "cache_read", "cache_write", "cache_write_1h")


def _pico(value: Decimal) -> int:
    # Prices finer than 1e-6 $/MTok are rounded up, so a price is never under-counted.
    scaled = value * _PICO_PER_USD_PER_MTOK
    integral = int(scaled)
    return integral if integral == scaled else integral + 1


def _class_price(raw: Any) -> ClassPrice:
    if isinstance(raw, Decimal | int | float):
        return ClassPrice(_pico(Decimal(str(raw))))
    base = _pico(Decimal(raw.base))
    tiers = tuple(sorted((int(t.start), _pico(Decimal(t.price))) for t in raw.tiers))
    return ClassPrice(base, tiers)


def from_genai_prices(model: str, provider: str | None) -> ModelPrice | None:
    """Resolve ``model`` through ``genai-prices``; ``None`` when it has no price."""
    try:
        calc = calc_price(Usage(input_tokens=0, output_tokens=0), model, provider_id=provider)
    except LookupError:
        return None
    classes: dict[str, ClassPrice] = {}
    for cls, key in _PRICE_KEYS.items():
        raw = getattr(calc.model_price, key, None)
        if raw is not None:
            classes[cls] = _class_price(raw)
    if "input" not in classes or "output" not in classes:
        return None
    return ModelPrice(model=model, provider=calc.provider.id, classes=classes)


def from_mtok(model: str, prices: dict[str, float]) -> ModelPrice:
    """A negotiated price from a policy: USD per million tokens per class."""
    classes = {cls: ClassPrice(_pico(Decimal(str(v)))) for cls, v in prices.items()}
    return ModelPrice(model=model, provider=None, classes=classes)


class PriceBook:
    """A process-wide cache of resolved ``genai-prices`` prices, keyed by (provider, model)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str | None, str], ModelPrice | None] = {}
        self._lock = threading.Lock()

    def get(self, model: str, provider: str | None = None) -> ModelPrice | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        price = from_genai_prices(model, provider)
        with self._lock:
            self._cache[key] = price
        return price


PRICES = PriceBook()


# -- providers -------------------------------------------------------------------------------

_COMMON_PROVIDERS = ("openai", "anthropic", "google", "aws", "azure", "mistral")


@functools.cache
def provider_ids() -> tuple[str, ...]:
    """The provider ids genai-prices knows, read once from its price data."""
    return tuple(sorted(p.id for p in get_snapshot().providers))


@functools.lru_cache(maxsize=1024)
def _is_provider(provider: str) -> bool:
    if provider in provider_ids() or provider.lower() == "litellm":
        return True
    # genai-prices also resolves aliases ("xai", "bedrock", "gemini"): accept what it accepts.
    return find_provider_by_id(get_snapshot().providers, provider) is not None


def provider_problem(provider: object) -> str | None:
    """Why ``provider`` is not a provider genai-prices knows, or None when it is."""
    if isinstance(provider, str) and _validate.is_name(provider) and _is_provider(provider):
        return None
    ids = provider_ids()
    near = difflib.get_close_matches(str(provider).lower(), ids, n=3) if provider else []
    hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
    examples = [i for i in _COMMON_PROVIDERS if i in ids] or list(ids[:6])
    return (
        f"unknown provider {provider!r}; {hint}genai-prices knows"
        f" {', '.join(map(repr, examples))} and {len(ids) - len(examples)} more"
    )
