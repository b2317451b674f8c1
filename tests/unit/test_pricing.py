"""Integer pricing agrees with genai_prices.calc_price to the nano-dollar."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from genai_prices import Usage, calc_price
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prism_limiter import InvalidRequest
from prism_limiter.pricing._pricing import PRICES, TokenUsage, from_genai_prices

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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_tokens": -1}, "input_tokens must be between 0"),
        ({"output_tokens": 100_000_001}, "output_tokens must be between 0"),
        ({"input_tokens": 1000.5}, "input_tokens must be an int, got float"),
        ({"cache_read_tokens": True}, "cache_read_tokens must be an int, got bool"),
        ({"cache_write_tokens": "5"}, "cache_write_tokens must be an int, got str"),
        ({"input_tokens": 10, "cache_read_tokens": 11}, "cache_read_tokens \\+ cache_write"),
        ({"input_tokens": 10, "cache_write_tokens": 6, "cache_read_tokens": 5}, "cannot exceed"),
        (
            {"input_tokens": 10, "cache_write_tokens": 2, "cache_write_1h_tokens": 3},
            "cache_write_1h_tokens cannot exceed cache_write_tokens",
        ),
    ],
    ids=repr,
)
def test_token_usage_is_checked_when_built(fields: dict[str, object], message: str) -> None:
    """Every count is a real int in range, cache counts are parts of the input."""
    with pytest.raises(InvalidRequest, match=message):
        TokenUsage(**fields)  # type: ignore[arg-type]


def test_token_usage_keeps_plain_ints() -> None:
    """An int subclass (IntEnum) is accepted as its plain value: redis-py would send its repr."""
    import enum

    class N(enum.IntEnum):
        TEN = 10

    usage = TokenUsage(input_tokens=N.TEN, output_tokens=N.TEN)
    assert type(usage.input_tokens) is int
    assert usage == TokenUsage(input_tokens=10, output_tokens=10)
