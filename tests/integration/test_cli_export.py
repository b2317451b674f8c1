"""``export focus``: a FOCUS 1.2 CSV from real usage counters, adding up to the spend."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _cli import cli

from prism_limiter import Limiter, Policy
from prism_limiter.cli._focus import CUSTOM_COLUMNS, FOCUS_COLUMNS

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini", "gpt-4o"]

[projects.search.prices."gpt-4o"]
input_mtok = 2.0
output_mtok = 8.0

[projects.billing]
allow_models = ["claude-haiku-*"]
"""
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
DECIMAL = re.compile(r"\d+(\.\d+)?\Z")


@pytest.fixture
def spent(redis_url: str) -> Any:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        calls = [
            ("search", "gpt-4o-mini", {"team": "growth"}, 1200, 300, 200),
            ("search", "gpt-4o-mini", {"team": "growth"}, 800, 100, 0),
            ("search", "gpt-4o", {"team": "growth"}, 5000, 500, 0),
            ("billing", "claude-haiku-4-5", {"team": "core"}, 3000, 200, 1000),
            ("billing", "claude-haiku-4-5", {}, 100, 10, 0),
        ]
        for project, model, tags, inp, out, read in calls:
            with lim.reserve(project, model, est_tokens=inp, tags=tags) as r:
                r.settle(input_tokens=inp, output_tokens=out, cache_read_tokens=read)
        today = datetime.now(UTC).date()
        yield {
            p: lim.usage(p, today.replace(day=1), today).total.cost_usd
            for p in ("search", "billing")
        }


def _export(redis_url: str, *args: str) -> list[dict[str, str]]:
    period = f"{datetime.now(UTC):%Y-%m}"
    done = cli("export", "focus", "--period", period, *args, url=redis_url)
    assert done.returncode == 0, done.stderr
    reader = csv.DictReader(io.StringIO(done.stdout))
    assert reader.fieldnames is not None
    columns = tuple(reader.fieldnames)
    assert columns[: len(FOCUS_COLUMNS)] == FOCUS_COLUMNS
    assert columns[len(FOCUS_COLUMNS) :][: len(CUSTOM_COLUMNS)] == CUSTOM_COLUMNS
    assert all(c.startswith("x_") for c in columns[len(FOCUS_COLUMNS) :])
    return list(reader)


def test_focus_rows_columns_formats_and_totals(redis_url: str, spent: dict[str, float]) -> None:
    rows = _export(redis_url)
    assert sorted((r["x_Project"], r["x_Model"]) for r in rows) == [
        ("billing", "claude-haiku-4-5"),
        ("search", "gpt-4o"),
        ("search", "gpt-4o-mini"),
    ]
    today = datetime.now(UTC).date()
    for r in rows:
        for col in (
            "BillingPeriodStart",
            "BillingPeriodEnd",
            "ChargePeriodStart",
            "ChargePeriodEnd",
        ):
            assert STAMP.match(r[col]), (col, r[col])
        assert r["ChargePeriodStart"] == f"{today}T00:00:00Z"
        assert r["BillingPeriodStart"] == f"{today.replace(day=1)}T00:00:00Z"
        for col in (
            "BilledCost",
            "EffectiveCost",
            "ContractedCost",
            "ListCost",
            "PricingQuantity",
            "ConsumedQuantity",
        ):
            assert DECIMAL.match(r[col]), (col, r[col])
        assert r["BillingCurrency"] == "USD" and r["ChargeCategory"] == "Usage"
        assert r["ChargeClass"] == "" and r["ConsumedUnit"] == "Tokens"
        assert r["ServiceCategory"] == "AI and Machine Learning"
        assert r["ServiceSubcategory"] == "Generative AI"
        assert r["BillingAccountId"] == "prism"
        assert json.loads(r["Tags"])["prism_project"] == r["x_Project"]
    for project, recorded in spent.items():
        billed = sum(Decimal(r["BilledCost"]) for r in rows if r["x_Project"] == project)
        assert billed == Decimal(f"{recorded:.9f}")
    by_model = {r["x_Model"]: r for r in rows}
    # gpt-4o is billed at the negotiated $2/$8, listed at genai-prices' $2.50/$10
    assert Decimal(by_model["gpt-4o"]["ContractedCost"]) == Decimal("0.014")
    assert Decimal(by_model["gpt-4o"]["ListCost"]) == Decimal("0.0175")
    # gpt-4o-mini has no negotiated price: list = contracted
    mini = by_model["gpt-4o-mini"]
    assert mini["ListCost"] == mini["ContractedCost"]
    assert mini["ProviderName"] == "OpenAI" and mini["x_Requests"] == "2"
    assert mini["x_Tag_team"] == "growth"  # every search request carried team=growth
    assert by_model["claude-haiku-4-5"]["x_Tag_team"] == ""  # one billing request did not
    assert by_model["claude-haiku-4-5"]["ProviderName"] == "Anthropic"


def test_one_project_to_a_file(redis_url: str, spent: dict[str, float], tmp_path: Path) -> None:
    target = tmp_path / "focus.csv"
    period = f"{datetime.now(UTC):%Y-%m}"
    done = cli(
        "export",
        "focus",
        "--period",
        period,
        "billing",
        "-o",
        str(target),
        "--billing-account-id",
        "acme",
        "--invoice-issuer",
        "Reseller Ltd",
        url=redis_url,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert {r["x_Project"] for r in rows} == {"billing"}
    assert {r["BillingAccountId"] for r in rows} == {"acme"}
    assert {r["InvoiceIssuerName"] for r in rows} == {"Reseller Ltd"}


def test_period_errors(redis_url: str) -> None:
    assert cli("export", "focus", "--period", "2025-13", url=redis_url).returncode == 2
    assert cli("export", "focus", "--period", "2999-01", url=redis_url).returncode == 2
    done = cli("export", "focus", "--period", "2020-01", url=redis_url)
    assert done.returncode == 0
    assert done.stdout.count("\n") == 1  # the header only
