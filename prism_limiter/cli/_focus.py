"""FinOps FOCUS 1.2 rows from the usage counters (pure): one per project x UTC day x model.

Costs: BilledCost = EffectiveCost = ContractedCost = the settled cost the limiter booked (at
the policy's negotiated price where it has one, else the genai-prices list price); ListCost is
recomputed from the day's token counts at the genai-prices list price. That recomputation is an
approximation: the counters are daily sums, so it uses each class's base price (no
long-context tier) and prices every cache write at the 5-minute rate (the counters do not keep
1-hour writes apart). A model genai-prices does not know gets ListCost = BilledCost.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal

from prism_limiter.engine._money import NANO_PER_USD
from prism_limiter.engine._records import UNTAGGED, UsageReport, UsageRow
from prism_limiter.pricing._pricing import ModelPrice

FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "Tags",
)
CUSTOM_COLUMNS = (
    "x_Project",
    "x_Model",
    "x_Requests",
    "x_InputTokens",
    "x_OutputTokens",
    "x_CacheReadTokens",
    "x_CacheWriteTokens",
)
TAG_PREFIX = "x_Tag_"
_NANO = Decimal(NANO_PER_USD)
_PICO = Decimal(10**12)
_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Account:
    """Who the rows bill: the billing account and, when not the provider, the invoice issuer."""

    id: str
    name: str
    invoice_issuer: str | None = None


def timestamp(day: date) -> str:
    """UTC midnight of ``day`` as FOCUS writes dates: ``YYYY-MM-DDTHH:mm:ssZ``."""
    return f"{datetime.combine(day, time(), UTC):%Y-%m-%dT%H:%M:%SZ}"


def next_month(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def usd(nano: int | Decimal) -> str:
    """A plain decimal with nine places (nano-dollars): never an exponent."""
    return f"{Decimal(nano) / _NANO:.9f}"


def nano(cost_usd: float) -> int:
    return round(cost_usd * NANO_PER_USD)


def list_cost_nano(row: UsageRow, price: ModelPrice | None) -> int | None:
    """The day's tokens at list price, base tier, cache writes at the 5-minute rate; rounded up
    to the nano-dollar. None without a list price."""
    if price is None or "input" not in price.classes or "output" not in price.classes:
        return None
    c = price.classes
    plain = c["input"].base
    read = c["cache_read"].base if "cache_read" in c else plain
    write = c["cache_write"].base if "cache_write" in c else plain
    cached = row.cache_read_tokens + row.cache_write_tokens
    pico = (
        (row.input_tokens - cached) * plain
        + row.cache_read_tokens * read
        + row.cache_write_tokens * write
        + row.output_tokens * c["output"].base
    )
    return int((Decimal(pico) / 1000).to_integral_value(rounding=ROUND_CEILING))


def day_tags(report: UsageReport) -> dict[str, str]:
    """The tags that apply to every model row of a day: a key whose requests that day all
    carried one value. The counters are not crossed by model and tag, so a key with several
    values that day cannot be attributed to a model row and is left out."""
    out = {}
    for key, values in report.by_tag.items():
        if len(values) == 1 and UNTAGGED not in values:
            out[key] = next(iter(values))
    return out


@functools.cache
def provider_name(provider_id: str | None) -> str:
    """The provider's display name from genai-prices (``openai`` -> ``OpenAI``)."""
    if not provider_id:
        return "Unknown"
    from genai_prices.data_snapshot import find_provider_by_id, get_snapshot  # noqa: PLC0415

    found = find_provider_by_id(get_snapshot().providers, provider_id)
    return str(found.name) if found is not None else provider_id


def rows(
    project: str,
    day: date,
    report: UsageReport,
    *,
    account: Account,
    list_price: Callable[[str], ModelPrice | None],
    tag_keys: tuple[str, ...] = (),
) -> list[dict[str, str]]:
    """One FOCUS row per model of ``project`` on UTC ``day`` (models with any usage)."""
    first = day.replace(day=1)
    tags = day_tags(report)
    out = []
    for model, u in sorted(report.by_model.items()):
        if not (u.requests or u.cost_usd or u.input_tokens or u.output_tokens):
            continue
        billed = nano(u.cost_usd)
        price = list_price(model)
        listed = list_cost_nano(u, price)
        provider = provider_name(price.provider if price else _prefix(model))
        tokens = u.input_tokens + u.output_tokens
        row = {
            "BilledCost": usd(billed),
            "BillingAccountId": account.id,
            "BillingAccountName": account.name,
            "BillingCurrency": "USD",
            "BillingPeriodEnd": timestamp(next_month(first)),
            "BillingPeriodStart": timestamp(first),
            "ChargeCategory": "Usage",
            "ChargeClass": "",
            "ChargeDescription": f"{model} tokens used by project {project}",
            "ChargePeriodEnd": timestamp(day + timedelta(days=1)),
            "ChargePeriodStart": timestamp(day),
            "ConsumedQuantity": str(tokens),
            "ConsumedUnit": "Tokens",
            "ContractedCost": usd(billed),
            "EffectiveCost": usd(billed),
            "InvoiceIssuerName": account.invoice_issuer or provider,
            "ListCost": usd(listed if listed is not None else billed),
            "PricingQuantity": f"{Decimal(tokens) / _MTOK:f}",
            "PricingUnit": "1000000 Tokens",
            "ProviderName": provider,
            "PublisherName": provider,
            "ServiceCategory": "AI and Machine Learning",
            "ServiceName": f"{provider} API",
            "ServiceSubcategory": "Generative AI",
            "Tags": json.dumps({"prism_project": project, **tags}, sort_keys=True),
            "x_Project": project,
            "x_Model": model,
            "x_Requests": str(u.requests),
            "x_InputTokens": str(u.input_tokens),
            "x_OutputTokens": str(u.output_tokens),
            "x_CacheReadTokens": str(u.cache_read_tokens),
            "x_CacheWriteTokens": str(u.cache_write_tokens),
        }
        row.update({TAG_PREFIX + k: tags.get(k, "") for k in tag_keys})
        out.append(row)
    return out


def _prefix(model: str) -> str | None:
    """``openai/gpt-4o`` -> ``openai``: the provider a model name carries, if any."""
    head, sep, _ = model.partition("/")
    return head if sep else None


def columns(tag_keys: tuple[str, ...]) -> tuple[str, ...]:
    """FOCUS columns first, then the custom ``x_`` ones (a column per tag key last)."""
    return FOCUS_COLUMNS + CUSTOM_COLUMNS + tuple(TAG_PREFIX + k for k in tag_keys)
