"""``report``: spend per model, tag value or day from the usage counters, adding up."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _cli import cli

from prism_limiter import Limiter, Policy
from prism_limiter.pricing._pricing import PRICES

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini", "gpt-4o"]

[projects.search.prices."gpt-4o"]
input_mtok = 2.0
output_mtok = 8.0
cache_read_mtok = 0.5

[[projects.search.budgets]]
id = "monthly"
usd = 10.0
period = "month"
"""

# model, feature tag (None: untagged), input, output, cache read
CALLS = [
    ("gpt-4o-mini", "chat", 1000, 100, 400),
    ("gpt-4o-mini", "chat", 2000, 200, 0),
    ("gpt-4o-mini", None, 1500, 50, 1000),
    ("gpt-4o", "search", 3000, 300, 2000),
    ("gpt-4o", "chat", 1000, 10, 0),
]


@pytest.fixture
def traffic(redis_url: str) -> Any:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        spent = 0.0
        for model, feature, inp, out, read in CALLS:
            tags = {"feature": feature} if feature else {}
            with lim.reserve("search", model, est_tokens=inp, tags=tags) as r:
                spent += r.settle(
                    input_tokens=inp, output_tokens=out, cache_read_tokens=read
                ).cost_usd
        yield spent


def _json(redis_url: str, *args: str) -> Any:
    done = cli("report", "search", *args, "--json", url=redis_url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_by_model(redis_url: str, traffic: float) -> None:
    data = _json(redis_url)
    rows = {r["key"]: r for r in data["rows"]}
    assert set(rows) == {"gpt-4o-mini", "gpt-4o"}
    assert data["rows_add_up"] is True
    assert data["total"]["cost_usd"] == pytest.approx(traffic)
    assert sum(r["cost_usd"] for r in data["rows"]) == pytest.approx(traffic, abs=1e-9)
    mini = rows["gpt-4o-mini"]
    assert mini["requests"] == 3
    assert mini["cache_read_tokens"] == 1400
    assert mini["cache_hit_ratio"] == pytest.approx(1400 / 4500)
    assert mini["cost_per_request_usd"] == pytest.approx(mini["cost_usd"] / 3)
    assert mini["cost_per_1k_tokens_usd"] == pytest.approx(mini["cost_usd"] / 4850 * 1000)
    price = PRICES.get("gpt-4o-mini")
    assert price is not None
    per_token = (price.classes["input"].base - price.classes["cache_read"].base) / 1e12
    assert mini["cache_saved_usd"] == pytest.approx(1400 * per_token)
    # gpt-4o has a negotiated price in the policy: $2 input, $0.5 cache read per MTok
    assert rows["gpt-4o"]["cache_saved_usd"] == pytest.approx(2000 * 1.5e-6)
    assert data["total"]["cache_saved_usd"] == pytest.approx(1400 * per_token + 2000 * 1.5e-6)
    [monthly] = data["budgets"]
    assert monthly["budget"] == "monthly"
    assert monthly["burn_usd_per_day"] > 0
    assert monthly["forecast_usd"] >= monthly["spent_usd"]


def test_by_tag_with_untagged_requests(redis_url: str, traffic: float) -> None:
    data = _json(redis_url, "--by", "tag:feature")
    rows = {r["key"]: r for r in data["rows"]}
    assert set(rows) == {"chat", "search", "(untagged)"}
    assert rows["chat"]["requests"] == 3
    assert rows["(untagged)"]["requests"] == 1
    assert rows["chat"]["cache_saved_usd"] is None  # not split by model
    assert data["rows_add_up"] is True
    # A tag key no request carried: one untagged row holding everything.
    data = _json(redis_url, "--by", "tag:team")
    assert [r["key"] for r in data["rows"]] == ["(untagged)"]
    assert data["rows"][0]["requests"] == 5


def test_by_day_table_and_csv(redis_url: str, traffic: float) -> None:
    today = datetime.now(UTC).date()
    start = (today - timedelta(days=2)).isoformat()
    data = _json(redis_url, "--by", "day", "--from", start, "--to", today.isoformat())
    assert [r["key"] for r in data["rows"]] == [
        (today - timedelta(days=n)).isoformat() for n in (2, 1, 0)
    ]
    assert data["rows"][-1]["requests"] == 5
    assert data["rows_add_up"] is True
    done = cli("report", "search", "--by", "day", "--from", start, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert "The rows add up to the total" in done.stdout
    assert "█" in done.stdout
    done = cli("report", "search", "--format", "csv", url=redis_url)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["key"] for r in rows] == ["gpt-4o", "gpt-4o-mini"]  # dearest first
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(traffic, abs=1e-9)
    assert "e-" not in done.stdout  # plain decimals


def test_table_footer_names_the_untagged_and_the_cache(redis_url: str, traffic: float) -> None:
    done = cli("report", "search", "--by", "tag:feature", url=redis_url)
    assert done.returncode == 0, done.stderr
    assert "(untagged): requests without the tag 'feature'" in done.stdout
    assert "not split by tag value" in done.stdout
    assert "budgets: the burn rate" in done.stdout


def test_usage_errors(redis_url: str) -> None:
    assert cli("report", "search", "--by", "colour", url=redis_url).returncode == 2
    assert cli("report", "search", "--from", "2025-02-30", url=redis_url).returncode == 2
    done = cli("report", "search", "--from", "2025-03-02", "--to", "2025-03-01", url=redis_url)
    assert done.returncode == 2
    assert "after" in done.stderr
    done = cli("report", "search", "--from", "2020-01-01", "--to", "2025-01-01", url=redis_url)
    assert done.returncode == 2
    assert "400 days" in done.stderr
