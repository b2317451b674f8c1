"""Usage objects of the real openai and anthropic SDKs, priced like genai-prices prices them."""

from __future__ import annotations

from decimal import ROUND_CEILING
from typing import Any

import pytest
from anthropic.types import Usage as AnthropicUsage
from genai_prices import calc_price, extract_usage
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.responses import ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from prism_limiter import TokenUsage
from prism_limiter.pricing._pricing import PRICES
from prism_limiter.pricing._usage import from_usage


def _nano(price: Any) -> int:
    return int((price * 10**9).to_integral_value(rounding=ROUND_CEILING))


def test_openai_chat_completion_usage_object() -> None:
    usage = CompletionUsage(
        prompt_tokens=2000,
        completion_tokens=300,
        total_tokens=2300,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=1024),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=100),
    )
    tokens = from_usage(usage)
    assert tokens == TokenUsage(input_tokens=2000, output_tokens=300, cache_read_tokens=1024)
    price = PRICES.get("gpt-4o", "openai")
    assert price is not None and price.cost_nano(tokens) == 6_720_000  # $0.00672


def test_openai_responses_usage_object() -> None:
    usage = ResponseUsage(
        input_tokens=1500,
        output_tokens=80,
        total_tokens=1580,
        input_tokens_details=InputTokensDetails(cached_tokens=512, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=40),
    )
    assert from_usage(usage) == TokenUsage(
        input_tokens=1500, output_tokens=80, cache_read_tokens=512
    )


def test_anthropic_usage_object_agrees_with_genai_prices_extraction() -> None:
    """Input excludes cache traffic; our cost equals genai-prices' extract_usage + calc_price."""
    usage = AnthropicUsage(
        input_tokens=50,
        output_tokens=400,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=10000,
    )
    tokens = from_usage(usage)
    assert tokens.input_tokens == 13050 and tokens.cache_write_tokens == 3000
    response = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "hi"}],
        "usage": usage.model_dump(),
    }
    extracted = extract_usage(response, provider_id="anthropic")
    expected = calc_price(extracted.usage, "claude-haiku-4-5", provider_id="anthropic")
    price = PRICES.get("claude-haiku-4-5", "anthropic")
    assert price is not None and price.cost_nano(tokens) == _nano(expected.total_price)


@pytest.mark.parametrize(
    "payload",
    [
        {
            "prompt_tokens": 2000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    ],
)
def test_openai_dict_agrees_with_genai_prices_extraction(payload: dict[str, Any]) -> None:
    response = {"model": "gpt-4o", "object": "chat.completion", "usage": payload}
    extracted = extract_usage(response, provider_id="openai", api_flavor="chat")
    expected = calc_price(extracted.usage, "gpt-4o", provider_id="openai")
    price = PRICES.get("gpt-4o", "openai")
    assert price is not None and price.cost_nano(from_usage(response)) == _nano(
        expected.total_price
    )
