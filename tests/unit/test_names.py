"""Model names: provider prefixes, canonical spellings, and the per-policy cache (pure)."""

from __future__ import annotations

import pytest

from prism_limiter import Policy, PolicyError
from prism_limiter.policy import _rules as rules_module
from prism_limiter.policy._rules import ProjectRules
from prism_limiter.pricing._names import prefixes, provider_id, resolve
from prism_limiter.pricing._pricing import PRICES


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


def rules_of(text: str) -> ProjectRules:
    policy = Policy.from_toml(text).projects["p"]
    return ProjectRules("p", policy, 1)


def test_a_model_is_resolved_once_per_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first call, a model's entry is a dict hit: no resolution, no price lookup."""
    rules = rules_of("[projects.p]\nallow_models = ['gpt-*']\n")
    first = rules.model("OpenAI/GPT-4o-mini")

    def fail(*_: object) -> None:
        raise AssertionError("resolved again")

    monkeypatch.setattr(rules_module, "resolve", fail)
    monkeypatch.setattr(PRICES, "get", fail)
    assert rules.model("OpenAI/GPT-4o-mini") is first
    assert first.canonical == "gpt-4o-mini" and first.denial is None


def test_stored_names_ignore_the_policy_provider() -> None:
    """A record's canonical spelling names its provider: a policy `provider` does not reprice it
    (the policy may have changed since the reserve)."""
    rules = rules_of("[projects.p]\nallow_models = ['*']\nprovider = 'openai'\n")
    via_groq = resolve("openai/gpt-oss-120b", "groq")
    assert via_groq.canonical == "groq/openai/gpt-oss-120b"
    assert rules.model(via_groq.canonical, stored=True).price == via_groq.price
    assert rules.model(via_groq.canonical).price != via_groq.price


def test_negotiated_price_spellings_match() -> None:
    rules = rules_of(
        "[projects.p]\nallow_models = ['*']\n"
        '[projects.p.prices."My-Org/Llama-3"]\ninput_mtok = 1.0\noutput_mtok = 1.0\n'
        '[projects.p.prices."GPT-4o"]\ninput_mtok = 2.0\noutput_mtok = 2.0\n'
    )
    for name in ("my-org/llama-3", "MY-ORG/LLAMA-3"):
        entry = rules.model(name)
        assert entry.price is not None and entry.price.classes["input"].base == 1_000_000
        assert entry.canonical == "my-org/llama-3"
    assert rules.model("my-org/llama-4").price is None
    assert rules.model("my-org/llama-4").canonical == "my-org/llama-4"
    for name in ("gpt-4o", "openai/GPT-4o", "azure/gpt-4o"):
        entry = rules.model(name)
        assert entry.price is not None and entry.price.classes["input"].base == 2_000_000, name
    assert rules.model("azure/gpt-4o").canonical == "azure/gpt-4o"  # still azure's row


@pytest.mark.parametrize(
    ("first", "second"),
    [("gpt-4o", "GPT-4o"), ("Azure/gpt-4o", "azure/GPT-4O"), ("vertex_ai/x-1", "google/x-1")],
)
def test_two_prices_for_one_model_are_refused(first: str, second: str) -> None:
    text = (
        "[projects.p]\nallow_models = ['*']\n"
        f'[projects.p.prices."{first}"]\ninput_mtok = 1.0\noutput_mtok = 1.0\n'
        f'[projects.p.prices."{second}"]\ninput_mtok = 2.0\noutput_mtok = 2.0\n'
    )
    with pytest.raises(PolicyError, match="name the same model"):
        Policy.from_toml(text)


def test_a_bare_and_a_prefixed_price_may_coexist() -> None:
    """`gpt-4o` and `azure/gpt-4o` are two prices: the prefixed one is the more specific."""
    rules = rules_of(
        "[projects.p]\nallow_models = ['*']\n"
        '[projects.p.prices."gpt-4o"]\ninput_mtok = 1.0\noutput_mtok = 1.0\n'
        '[projects.p.prices."azure/gpt-4o"]\ninput_mtok = 3.0\noutput_mtok = 3.0\n'
    )
    assert rules.model("openai/gpt-4o").price.classes["input"].base == 1_000_000  # type: ignore[union-attr]
    assert rules.model("gpt-4o", "azure").price.classes["input"].base == 3_000_000  # type: ignore[union-attr]


def test_glob_character_classes_ignore_case() -> None:
    rules = rules_of("[projects.p]\nallow_models = ['[G]PT-4o-*']\ndeny_models = ['*-[N]ANO']\n")
    assert rules.model("gpt-4o-mini").denial is None
    assert rules.model("GPT-4O-NANO").denial == "model-denied"


def test_a_provider_glob_covers_the_explicit_provider() -> None:
    """`deny_models = ["azure/*"]` denies `reserve("gpt-4o-mini", provider="azure")` too."""
    rules = rules_of("[projects.p]\nallow_models = ['*']\ndeny_models = ['azure/*']\n")
    assert rules.model("gpt-4o-mini", "azure").denial == "model-denied"
    assert rules.model("Azure/gpt-4o-mini").denial == "model-denied"
    assert rules.model("gpt-4o-mini").denial is None
