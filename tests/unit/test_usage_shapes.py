"""Provider usage payloads become total-input token counts, each provider read its own way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from prism_limiter import InvalidRequest, TokenUsage
from prism_limiter.pricing._usage import from_counts, from_usage


def test_openai_chat_completions() -> None:
    """prompt_tokens already include cached tokens; reasoning is inside completion_tokens."""
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    assert from_usage(usage) == TokenUsage(
        input_tokens=2000, output_tokens=300, cache_read_tokens=1024
    )


def test_openai_responses_object() -> None:
    usage = SimpleNamespace(
        input_tokens=1500,
        output_tokens=80,
        input_tokens_details=SimpleNamespace(cached_tokens=512),
        output_tokens_details=SimpleNamespace(reasoning_tokens=40),
    )
    assert from_usage(usage) == TokenUsage(
        input_tokens=1500, output_tokens=80, cache_read_tokens=512
    )


def test_anthropic_messages_adds_cache_traffic_to_input() -> None:
    """Anthropic's input_tokens excludes cache reads and writes; the 1h part is kept apart."""
    usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 400,
    }
    assert from_usage(usage) == TokenUsage(
        input_tokens=13050,
        output_tokens=400,
        cache_read_tokens=10000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=2000,
    )


def test_gemini_usage_metadata_in_a_response() -> None:
    """promptTokenCount includes cached content; thoughts are billed as output."""
    response = {
        "candidates": [],
        "usageMetadata": {
            "promptTokenCount": 4000,
            "cachedContentTokenCount": 3000,
            "candidatesTokenCount": 200,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 4250,
        },
    }
    assert from_usage(response) == TokenUsage(
        input_tokens=4000, output_tokens=250, cache_read_tokens=3000
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": 1.5, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {"tokens": 5},
    ],
)
def test_bad_usage_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        from_usage(bad)


@pytest.mark.parametrize("value", [-1, 1.0, float("nan"), True, None, "3", 10**12])
def test_bad_counts_are_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        from_counts(value, 1)
