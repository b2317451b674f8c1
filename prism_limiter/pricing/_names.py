"""Model names as users write them: any case, with or without a provider prefix.

LiteLLM's convention puts the provider in front of the model (``openai/gpt-4o-mini``,
``vertex_ai/gemini-2.5-pro``, ``openrouter/openai/gpt-4o-mini``); ``genai-prices`` does not strip
it (it finds no price for ``openai/gpt-4o-mini``). Here a leading segment is a *provider prefix*
when genai-prices resolves it to a provider, by id or alias, in any case; anything else
(``my-org/llama-3``) is part of the model's name.

Which provider prices a name:

- an explicit provider (``reserve(provider=)``, else the policy's ``provider``) wins: the whole
  name is looked up in its price list first (resellers list ``openai/gpt-4o-mini`` under that
  name), then the name without each provider prefix in turn;
- otherwise each provider prefix in turn, the model being the rest of the name;
- then the whole name, at whichever provider genai-prices matches it to.

Every name also gets one **canonical** spelling, which the hold record, the audit stream and the
usage rows carry, so one model's spend is one row however callers spell it: in lower case,
``<provider>/<model>`` for the provider and model that priced it, shortened to ``<model>`` when
that alone finds the same model at the same provider. ``OpenAI/GPT-4o-mini``, ``gpt-4o-mini`` and
``reserve("gpt-4o-mini", provider="openai")`` are all ``gpt-4o-mini``; ``azure/gpt-4o-mini`` stays
``azure/gpt-4o-mini``. The canonical spelling prices alone (no provider needed) exactly as the
original did, so a settle from another process, which only has the record, books the same price.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

from prism_limiter.pricing._pricing import PRICES, ModelPrice


@functools.lru_cache(maxsize=1024)
def provider_id(value: str) -> str | None:
    """The genai-prices provider id ``value`` names (an id or alias, any case), or None.

    ``litellm`` is no provider: to genai-prices it means "the provider is the name's prefix",
    which is what a name without an explicit provider gets here anyway.
    """
    if not value or value.lower() == "litellm":
        return None
    found = find_provider_by_id(get_snapshot().providers, value)
    return found.id if found is not None else None


@functools.lru_cache(maxsize=4096)
def prefixes(name: str) -> tuple[tuple[str, str], ...]:
    """``(provider id, rest)`` for each leading segment of ``name`` that names a provider.

    ``openrouter/openai/gpt-4o-mini`` -> ``(("openrouter", "openai/gpt-4o-mini"),
    ("openai", "gpt-4o-mini"))``; ``my-org/llama-3`` -> ``()``.
    """
    out: list[tuple[str, str]] = []
    rest = name
    while True:
        head, sep, tail = rest.partition("/")
        pid = provider_id(head) if sep and tail else None
        if pid is None:
            return tuple(out)
        out.append((pid, tail))
        rest = tail


@dataclass(frozen=True, slots=True)
class Resolved:
    """How one name (with one explicit provider, or none) was priced, and its spellings."""

    name: str  # the name as written, in lower case
    provider: str | None  # the explicit provider id in force (None: taken from the name)
    tried: tuple[tuple[str, str | None], ...]  # (model, provider) looked up, in order
    price: ModelPrice | None  # the genai-prices price, if any lookup found one
    canonical: str | None  # the canonical spelling when priced (see the module docstring)
    forms: tuple[str, ...]  # every spelling globs and negotiated prices match, specific first

    @property
    def prefix(self) -> str | None:
        """The provider the name's own first segment names, if any."""
        levels = prefixes(self.name)
        return levels[0][0] if levels else None


def _lookups(name: str, provider: str | None) -> tuple[tuple[str, str | None], ...]:
    levels = prefixes(name)
    if provider is not None:
        return ((name, provider), *((rest, provider) for _, rest in levels))
    return (*((rest, pid) for pid, rest in levels), (name, None))


def _first_price(
    lookups: tuple[tuple[str, str | None], ...],
) -> tuple[str, ModelPrice] | None:
    for model, provider in lookups:
        price = PRICES.get(model, provider)
        if price is not None:
            return model, price
    return None


@functools.lru_cache(maxsize=4096)
def resolve(name: str, provider: str | None) -> Resolved:
    """Price ``name`` (any case) at ``provider`` (an id or alias) or at the provider it names."""
    lower = name.lower()
    pid = provider_id(provider) if provider is not None else None
    tried = _lookups(lower, pid)
    hit = _first_price(tried)
    forms: list[str] = []
    canonical: str | None = None
    price: ModelPrice | None = None
    if hit is not None:
        model, price = hit
        at = price.provider or ""
        full = f"{at}/{model}"
        alone = _first_price(_lookups(model, None))
        same = alone is not None and alone[0] == model and alone[1].provider == at
        canonical = model if same else full
        forms.append(full)
    elif pid is not None:
        forms.extend(f"{pid}/{model}" for model, _ in tried)
    forms.append(lower)
    levels = prefixes(lower)
    if levels:
        forms.append(f"{levels[0][0]}/{levels[0][1]}")
    forms.extend(rest for _, rest in levels)
    if canonical is not None:
        forms.append(canonical)
    return Resolved(
        name=lower,
        provider=pid,
        tried=tried,
        price=price,
        canonical=canonical,
        forms=tuple(dict.fromkeys(forms)),
    )


def key_forms(key: str) -> tuple[str, ...]:
    """The spellings a negotiated price's name is found under: lower case, and with its
    provider prefix (if any) as the provider's id (``Azure/gpt-4o`` -> ``azure/gpt-4o``)."""
    lower = key.lower()
    levels = prefixes(lower)
    forms = [lower]
    if levels:
        forms.append(f"{levels[0][0]}/{levels[0][1]}")
    return tuple(dict.fromkeys(forms))
