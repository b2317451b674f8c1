"""Integer pricing agrees with genai_prices.calc_price to the nano-dollar."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from genai_prices import Usage, calc_price
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prism_limiter import InvalidRequest
from prism_limiter._pricing import PRICES, TokenUsage, from_genai_prices

MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-5.2", "openai"),
    ("claude-sonnet-4-5", "anthropic"),  # long-context tiers
    ("claude-haiku-4-5", "anthropic"),  # 5m and 1h cache writes
    ("gemini-2.5-pro", "google"),  # tiers
    ("gemini-2.5-flash", "google"),
]


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    total_in=st.integers(0, 400_000),
    out=st.integers(0, 64_000),
    read_frac=st.floats(0, 1),
    write_frac=st.floats(0, 1),
    one_hour_frac=st.floats(0, 1),
)
def test_matches_calc_price(
    model: tuple[str, str],
    total_in: int,
    out: int,
    read_frac: float,
    write_frac: float,
    one_hour_frac: float,
) -> None:
    """Any usage, any listed model (tiers, cache reads and writes): the same cost, rounded up."""
    read = int(total_in * read_frac)
    write = int((total_in - read) * write_frac)
    write_1h = int(write * one_hour_frac)
    assume(read + write <= total_in)
    price = from_genai_prices(*model)
    assert price is not None
    usage = TokenUsage(
        input_tokens=total_in,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
    )
    ref = calc_price(
        Usage(
            input_tokens=total_in,
            output_tokens=out,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=write_1h,
        ),
        model[0],
        provider_id=model[1],
    ).total_price
    expected = int((ref * 10**9).to_integral_value(rounding=ROUND_CEILING))
    assert price.cost_nano(usage) == expected


def test_worked_example() -> None:
    """gpt-4o, prompt 2000 of which 1024 cached, completion 300 -> $0.00672."""
    price = PRICES.get("gpt-4o", "openai")
    assert price is not None
    usage = TokenUsage(input_tokens=2000, cache_read_tokens=1024, output_tokens=300)
    assert Decimal(price.cost_nano(usage)) / 10**9 == Decimal("0.00672")


def test_a_single_cheap_token_is_not_rounded_to_zero() -> None:
    price = PRICES.get("gpt-4o-mini")
    assert price is not None
    assert price.cost_nano(TokenUsage(input_tokens=1)) == 150


def test_unknown_model_has_no_price() -> None:
    assert PRICES.get("surely-not-a-model-xyz") is None


def test_cache_counts_cannot_exceed_input() -> None:
    with pytest.raises(InvalidRequest, match="cannot exceed"):
        TokenUsage(input_tokens=10, cache_read_tokens=11).check()
