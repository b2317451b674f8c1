"""FOCUS 1.2 rows from usage counters: columns, formats, costs (pure)."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal

from prism_limiter import UsageReport, UsageRow
from prism_limiter.cli import _focus
from prism_limiter.pricing._pricing import PRICES, from_mtok

STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
DECIMAL = re.compile(r"-?\d+(\.\d+)?\Z")
MANDATORY = [  # FOCUS 1.2 mandatory columns (shared/FACTS.md)
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
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
]


def _row(cost: float, requests: int, inp: int, out: int, read: int = 0, write: int = 0) -> UsageRow:
    return UsageRow(
        cost_usd=cost,
        requests=requests,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        expired_holds=0,
    )


def _report(by_model: dict[str, UsageRow], by_tag: dict[str, dict[str, UsageRow]]) -> UsageReport:
    total = _row(
        sum(r.cost_usd for r in by_model.values()),
        sum(r.requests for r in by_model.values()),
        sum(r.input_tokens for r in by_model.values()),
        sum(r.output_tokens for r in by_model.values()),
    )
    return UsageReport(
        project="p", days=("20250314",), total=total, by_model=by_model, by_tag=by_tag
    )


MINI = _row(0.000228450, 2, 2000, 300, read=1024)
CLAUDE = _row(0.5, 1, 10_000, 1000, write=2000)
REPORT = _report(
    {"gpt-4o-mini": MINI, "claude-haiku-4-5": CLAUDE, "idle": _row(0.0, 0, 0, 0)},
    {"team": {"growth": _row(0.500228450, 3, 12_000, 1300)}, "feature": {"chat": MINI, "": CLAUDE}},
)
ACCOUNT = _focus.Account(id="acme-prod", name="Acme production")


def _rows(tag_keys: tuple[str, ...] = ("feature", "team")) -> list[dict[str, str]]:
    return _focus.rows(
        "search",
        date(2025, 3, 14),
        REPORT,
        account=ACCOUNT,
        list_price=PRICES.get,
        tag_keys=tag_keys,
    )


def test_columns_focus_first_then_custom() -> None:
    cols = _focus.columns(("feature", "team"))
    assert set(MANDATORY) <= set(cols)
    custom = [c for c in cols if c.startswith("x_")]
    assert cols[-len(custom) :] == tuple(custom)  # every x_ column after the FOCUS ones
    assert cols[-2:] == ("x_Tag_feature", "x_Tag_team")
    for row in _rows():
        assert tuple(row) == cols


def test_one_row_per_model_with_usage_and_its_formats() -> None:
    rows = _rows()
    assert [r["x_Model"] for r in rows] == ["claude-haiku-4-5", "gpt-4o-mini"]  # not "idle"
    for r in rows:
        for col in (
            "BillingPeriodStart",
            "BillingPeriodEnd",
            "ChargePeriodStart",
            "ChargePeriodEnd",
        ):
            assert STAMP.match(r[col]), (col, r[col])
        for col in (
            "BilledCost",
            "EffectiveCost",
            "ContractedCost",
            "ListCost",
            "PricingQuantity",
            "ConsumedQuantity",
        ):
            assert DECIMAL.match(r[col]), (col, r[col])
        assert r["BillingPeriodStart"] == "2025-03-01T00:00:00Z"
        assert r["BillingPeriodEnd"] == "2025-04-01T00:00:00Z"
        assert r["ChargePeriodStart"] == "2025-03-14T00:00:00Z"
        assert r["ChargePeriodEnd"] == "2025-03-15T00:00:00Z"
        assert r["ChargeCategory"] == "Usage" and r["ChargeClass"] == ""
        assert r["BillingCurrency"] == "USD"
        assert r["ServiceCategory"] == "AI and Machine Learning"
        assert r["ServiceSubcategory"] == "Generative AI"
        assert r["ConsumedUnit"] == "Tokens" and r["PricingUnit"] == "1000000 Tokens"
        assert r["BillingAccountId"] == "acme-prod"
        assert r["BillingAccountName"] == "Acme production"
        assert r["BilledCost"] == r["EffectiveCost"] == r["ContractedCost"]
    mini = rows[1]
    assert mini["BilledCost"] == "0.000228450"
    assert mini["ConsumedQuantity"] == "2300" and mini["PricingQuantity"] == "0.0023"
    assert mini["ProviderName"] == mini["PublisherName"] == mini["InvoiceIssuerName"] == "OpenAI"
    assert rows[0]["ProviderName"] == "Anthropic"


def test_list_cost_at_list_price_from_the_token_counts() -> None:
    price = PRICES.get("gpt-4o-mini")
    assert price is not None
    c = price.classes
    pico = (2000 - 1024) * c["input"].base + 1024 * c["cache_read"].base + 300 * c["output"].base
    assert _rows()[1]["ListCost"] == _focus.usd(Decimal(pico) / 1000)
    negotiated = from_mtok("m", {"input": 1.0, "output": 2.0, "cache_write": 1.25})
    # cache writes at their rate, the rest of the input plain; rounded up to the nano-dollar
    assert _focus.list_cost_nano(CLAUDE, negotiated) == (8000 * 1 + 2000 * 1.25 + 1000 * 2) * 1000
    assert _focus.list_cost_nano(CLAUDE, None) is None
    unknown = _focus.rows(
        "search",
        date(2025, 3, 14),
        _report({"mystery": MINI}, {}),
        account=ACCOUNT,
        list_price=lambda m: None,
    )
    assert unknown[0]["ListCost"] == unknown[0]["BilledCost"]  # no list price known
    assert unknown[0]["ProviderName"] == "Unknown"


def test_tags_only_where_every_request_of_the_day_carried_them() -> None:
    for r in _rows():
        assert json.loads(r["Tags"]) == {"prism_project": "search", "team": "growth"}
        assert r["x_Tag_team"] == "growth"
        assert r["x_Tag_feature"] == ""  # chat for some requests, untagged for others
        assert r["x_Project"] == "search"


def test_billed_cost_sums_to_the_recorded_spend() -> None:
    billed = sum(Decimal(r["BilledCost"]) for r in _rows())
    assert billed == Decimal("0.500228450")


def test_invoice_issuer_override() -> None:
    account = _focus.Account(id="a", name="a", invoice_issuer="Reseller Ltd")
    rows = _focus.rows("search", date(2025, 3, 14), REPORT, account=account, list_price=PRICES.get)
    assert {r["InvoiceIssuerName"] for r in rows} == {"Reseller Ltd"}
    assert {r["ProviderName"] for r in rows} == {"OpenAI", "Anthropic"}
