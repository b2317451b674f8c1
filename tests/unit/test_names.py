"""Model names: provider prefixes and canonical spellings (pure)."""

from __future__ import annotations

import pytest

from prism_limiter._names import prefixes, provider_id, resolve


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openai/gpt-4o-mini", (("openai", "gpt-4o-mini"),)),
        ("vertex_ai/gemini-2.5-pro", (("google", "gemini-2.5-pro"),)),  # an alias
        ("bedrock/anthropic.claude-3-5-haiku", (("aws", "anthropic.claude-3-5-haiku"),)),
        (
            "openrouter/openai/gpt-4o-mini",
            (("openrouter", "openai/gpt-4o-mini"), ("openai", "gpt-4o-mini")),
        ),
        ("my-org/llama-3", ()),
        ("gpt-4o-mini", ()),
        ("openai/", ()),
        ("litellm/gpt-4o-mini", ()),  # genai-prices' pseudo-provider is no prefix
    ],
)
def test_prefixes(name: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert prefixes(name) == expected


def test_litellm_is_no_provider_id() -> None:
    assert provider_id("litellm") is None and provider_id("LiteLLM") is None
    assert provider_id("OpenAI") == "openai" and provider_id("xai") == "x-ai"


@pytest.mark.parametrize(
    ("name", "provider", "canonical"),
    [
        ("gpt-4o-mini", None, "gpt-4o-mini"),
        ("GPT-4o-Mini", None, "gpt-4o-mini"),
        ("OpenAI/GPT-4o-mini", None, "gpt-4o-mini"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("gpt-4o-mini", "OpenAI", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "litellm", "gpt-4o-mini"),
        ("vertex_ai/gemini-2.5-pro", None, "gemini-2.5-pro"),
        ("anthropic/claude-3-5-haiku-latest", None, "claude-3-5-haiku-latest"),
        ("azure/gpt-4o-mini", None, "azure/gpt-4o-mini"),
        ("gpt-4o-mini", "azure", "azure/gpt-4o-mini"),
        ("openai/gpt-4o-mini", "azure", "azure/gpt-4o-mini"),
        ("openai/gpt-4o-mini", "openrouter", "openrouter/openai/gpt-4o-mini"),
        ("openrouter/openai/gpt-4o-mini", None, "openrouter/openai/gpt-4o-mini"),
        ("groq/openai/gpt-oss-120b", None, "groq/openai/gpt-oss-120b"),
        ("my-org/llama-3", None, None),  # no price list knows it
    ],
)
def test_canonical_spelling(name: str, provider: str | None, canonical: str | None) -> None:
    """One spelling per (provider, model): the shortest that prices the same on its own."""
    assert resolve(name, provider).canonical == canonical


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("OpenAI/GPT-4o-mini", None),
        ("gpt-4o", "azure"),
        ("openai/gpt-oss-120b", "groq"),
        ("openai/gpt-4o-mini", "openrouter"),
        ("gemini/gemini-2.5-pro", None),
        ("bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", None),
        ("claude-3-5-haiku-latest", "anthropic"),
        ("deepseek/deepseek-chat", "openrouter"),
    ],
)
def test_the_canonical_spelling_prices_alone_the_same(name: str, provider: str | None) -> None:
    """A settle from another process has only the record's spelling: no provider is needed to
    find the very same price, and canonical spellings are fixed points."""
    first = resolve(name, provider)
    assert first.price is not None and first.canonical is not None
    again = resolve(first.canonical, None)
    assert again.price == first.price
    assert again.canonical == first.canonical


def test_an_explicit_provider_looks_the_whole_name_up_first() -> None:
    """Resellers list models under prefixed names: `openai/gpt-oss-120b` at groq is groq's."""
    res = resolve("openai/gpt-oss-120b", "groq")
    assert res.price is not None and res.price.provider == "groq"
    assert res.tried[0] == ("openai/gpt-oss-120b", "groq")
    assert resolve("openai/gpt-oss-120b", None).price.provider == "openai"  # type: ignore[union-attr]


def test_globs_see_every_spelling() -> None:
    forms = resolve("vertex_ai/Gemini-2.5-Pro", None).forms
    assert {"vertex_ai/gemini-2.5-pro", "google/gemini-2.5-pro", "gemini-2.5-pro"} <= set(forms)
    assert "openai/gpt-4o-mini" in resolve("gpt-4o-mini", None).forms
