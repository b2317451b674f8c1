"""Model names as users write them: provider prefixes (LiteLLM style) and any case.

Each name is priced, matched by globs and attributed as the model it names, whatever its spelling.
"""

from __future__ import annotations

from decimal import ROUND_CEILING
from typing import Any

import pytest
from _helpers import audit
from genai_prices import Usage, calc_price

from prism_limiter import InvalidRequest, ModelNotAllowed, Policy
from prism_limiter.engine._keys import FS

pytestmark = pytest.mark.usefixtures("rclient")

STRICT = """
[projects.p]
allow_models = ["*"]
on_unknown_price = "deny"
default_max_output_tokens = 100
"""


def nano_of(model: str, provider: str | None, input_tokens: int, output_tokens: int) -> int:
    """The genai-prices cost of a call, in nano-dollars rounded up (the library's unit)."""
    ref = calc_price(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens), model, provider_id=provider
    ).total_price
    return int((ref * 10**9).to_integral_value(rounding=ROUND_CEILING))


def stored_model(rclient: Any, project: str, rid: str) -> str:
    raw = rclient.hget(f"prism:{{{project}}}:holds", rid)
    return str(raw.decode().split(FS)[4])


@pytest.mark.parametrize(
    ("name", "bare", "provider"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini", "openai"),
        ("anthropic/claude-3-5-haiku-latest", "claude-3-5-haiku-latest", "anthropic"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro", "google"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro", "google"),  # an alias genai-prices resolves
        ("OpenAI/GPT-4o-Mini", "gpt-4o-mini", "openai"),
    ],
)
def test_a_provider_prefix_is_priced_through_the_provider(
    limiter: Any, name: str, bare: str, provider: str
) -> None:
    """`openai/gpt-4o-mini` costs what `gpt-4o-mini` costs at openai, hold and settle alike."""
    limiter.apply_policy(Policy.from_toml(STRICT))
    r = limiter.reserve("p", name, est_tokens=1000, max_output_tokens=100)
    plain = limiter.reserve("p", bare, est_tokens=1000, max_output_tokens=100, provider=provider)
    assert r.decision.hold_usd == plain.decision.hold_usd > 0
    plain.release()
    s = r.settle(input_tokens=700, output_tokens=50)
    assert round(s.cost_usd * 1e9) == nano_of(bare, provider, 700, 50)


def test_a_name_whose_first_segment_is_no_provider_is_looked_up_whole(limiter: Any) -> None:
    """`my-org/llama-3` is an in-house model: it has no list price, but may have a negotiated
    one under its whole name."""
    limiter.apply_policy(
        Policy.from_toml(
            STRICT + '[projects.p.prices."my-org/llama-3"]\ninput_mtok = 1.0\noutput_mtok = 2.0\n'
        )
    )
    r = limiter.reserve("p", "my-org/llama-3", est_tokens=1000, max_output_tokens=0)
    assert round(r.decision.hold_usd * 1e9) == 1000 * 1000
    assert round(r.settle(input_tokens=10, output_tokens=10).cost_usd * 1e9) == 30_000
    with pytest.raises(InvalidRequest, match="no price"):
        limiter.reserve("p", "my-org/llama-4", est_tokens=10)


def test_an_explicit_provider_wins_over_the_prefix(limiter: Any, rclient: Any) -> None:
    """`provider="groq"` prices `openai/gpt-oss-120b` from groq's list (whole name), not openai's;
    a settle from another process (no reservation object) books the same groq price."""
    limiter.apply_policy(Policy.from_toml(STRICT))
    groq = nano_of("openai/gpt-oss-120b", "groq", 1000, 100)
    assert groq != nano_of("gpt-oss-120b", "openai", 1000, 100)
    r = limiter.reserve(
        "p", "openai/gpt-oss-120b", est_tokens=10, provider="groq", reservation_id="g1"
    )
    assert stored_model(rclient, "p", "g1") == "groq/openai/gpt-oss-120b"
    s = limiter.settle("p", r.id, input_tokens=1000, output_tokens=100)
    assert round(s.cost_usd * 1e9) == groq


def test_the_policy_provider_wins_over_the_prefix(limiter: Any) -> None:
    """A project whose policy says `provider = "azure"` prices `openai/gpt-4o` at azure."""
    limiter.apply_policy(Policy.from_toml(STRICT + 'provider = "azure"\n'))
    r = limiter.reserve("p", "openai/gpt-4o", est_tokens=1000, max_output_tokens=100)
    s = r.settle(input_tokens=1000, output_tokens=100)
    assert round(s.cost_usd * 1e9) == nano_of("gpt-4o", "azure", 1000, 100)
    assert limiter.usage("p").by_model.keys() == {"azure/gpt-4o"}


def test_a_prefix_the_provider_contradicts_is_explained(limiter: Any) -> None:
    """`provider="anthropic"` with `openai/gpt-4o-mini`: anthropic has no such model. The error
    says what was looked up where, and that the prefix named another provider."""
    limiter.apply_policy(Policy.from_toml(STRICT))
    with pytest.raises(InvalidRequest) as exc:
        limiter.reserve("p", "openai/gpt-4o-mini", est_tokens=10, provider="anthropic")
    message = str(exc.value)
    assert "'openai/gpt-4o-mini'" in message and "'gpt-4o-mini'" in message
    assert "provider 'anthropic' (from provider=)" in message
    assert "prefix names provider 'openai', which provider= overrides" in message
    assert "pass provider= to reserve() ('openai', as the prefix says)" in message
    limiter.apply_policy(Policy.from_toml(STRICT + 'provider = "azure"\n'))
    with pytest.raises(InvalidRequest, match="which the policy's provider overrides"):
        limiter.reserve("p", "anthropic/claude-9-haiku", est_tokens=10)


def test_the_unknown_price_error_says_what_was_looked_up_and_how_to_fix_it(limiter: Any) -> None:
    limiter.apply_policy(Policy.from_toml(STRICT.replace("[projects.p]", "[projects.search]")))
    with pytest.raises(InvalidRequest) as exc:
        limiter.reserve("search", "openai/gpt-9-turbo", est_tokens=10)
    message = str(exc.value)
    assert "no price is known for model 'openai/gpt-9-turbo'" in message
    assert "'gpt-9-turbo' at provider 'openai' (from the name's prefix)" in message
    assert "provider=" in message
    assert "the policy's provider" in message
    assert '[projects.search.prices."openai/gpt-9-turbo"]' in message
    assert 'on_unknown_price = "allow"' in message
    with pytest.raises(InvalidRequest) as exc:
        limiter.reserve("search", "in-house-7b", est_tokens=10)
    assert "'in-house-7b' at any provider" in str(exc.value)


ALLOW = """
[projects.p]
allow_models = ["gpt-4o-*", "openai/o3*", "claude-3-5-haiku-latest"]
deny_models = ["*GPT-4o-MINI-2024*", "google/*"]
default_max_output_tokens = 10
"""


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("GPT-4o-Mini", None),  # allowed by gpt-4o-*, whatever the case
        ("openai/gpt-4o-mini", None),  # by its bare part
        ("OpenAI/o3-mini", None),  # by the prefixed glob
        ("o3-mini", None),  # by the prefixed glob: genai-prices places o3-mini at openai
        ("anthropic/claude-3-5-haiku-latest", None),
        ("gpt-4o-mini-2024-07-18", "model-denied"),  # deny wins over allow, any case
        ("openai/GPT-4o-mini-2024-07-18", "model-denied"),
        ("gemini-2.5-pro", "model-denied"),  # google/* denies the bare google model too
        ("vertex_ai/gemini-2.5-pro", "model-denied"),
        ("my-org/gpt-4o-mini", "model-not-allowed"),  # my-org is no provider: no bare part
        ("claude-3-opus-latest", "model-not-allowed"),
    ],
)
def test_globs_match_any_case_and_the_bare_model(
    limiter: Any, rclient: Any, name: str, reason: str | None
) -> None:
    limiter.apply_policy(Policy.from_toml(ALLOW))
    r = limiter.try_reserve("p", name, est_tokens=10)
    assert r.decision.reason == reason, r.decision.message
    if reason is not None:
        with pytest.raises(ModelNotAllowed):
            limiter.reserve("p", name, est_tokens=10)


def test_budget_and_rate_limit_globs_match_any_spelling(limiter: Any) -> None:
    """A budget or rate limit scoped to `models = ["GPT-4o*"]` counts `openai/gpt-4o-mini`."""
    limiter.apply_policy(
        Policy.from_toml(
            """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "gpt"
usd = 10.0
models = ["GPT-4o*"]
[[projects.p.budgets]]
id = "openai"
usd = 10.0
models = ["openai/*"]
[[projects.p.rate_limits]]
id = "one-at-a-time"
models = ["Gpt-4O-*"]
max_concurrent = 1
"""
        )
    )
    r = limiter.reserve("p", "OpenAI/GPT-4o-mini", est_tokens=10)
    assert {b.budget for b in r.decision.budgets} == {"gpt", "openai"}
    denied = limiter.try_reserve("p", "gpt-4o-mini", est_tokens=10)
    assert denied.decision.reason == "rate" and denied.decision.limit == "one-at-a-time"
    other = limiter.reserve("p", "claude-3-5-haiku-latest", est_tokens=10)
    assert other.decision.budgets == ()


def test_negotiated_prices_match_any_case_with_or_without_the_prefix(limiter: Any) -> None:
    limiter.apply_policy(
        Policy.from_toml(
            STRICT
            + '[projects.p.prices."GPT-4o"]\ninput_mtok = 1.0\noutput_mtok = 1.0\n'
            + '[projects.p.prices."openai/o3-mini"]\ninput_mtok = 2.0\noutput_mtok = 2.0\n'
            + '[projects.p.prices."Azure/gpt-4o"]\ninput_mtok = 3.0\noutput_mtok = 3.0\n'
        )
    )

    def per_token(name: str, **kw: Any) -> float:
        r = limiter.reserve("p", name, est_tokens=1_000_000, max_output_tokens=0, **kw)
        r.release()
        return float(r.decision.hold_usd)

    for name in ("gpt-4o", "GPT-4o", "openai/gpt-4o", "OPENAI/GPT-4O"):
        assert per_token(name) == pytest.approx(1.0), name
    for name in ("o3-mini", "OpenAI/O3-Mini"):
        assert per_token(name) == pytest.approx(2.0), name
    assert per_token("azure/gpt-4o") == pytest.approx(3.0)  # the more specific price
    assert per_token("gpt-4o", provider="azure") == pytest.approx(3.0)


def test_one_model_is_one_usage_row_whatever_its_spelling(limiter: Any, rclient: Any) -> None:
    """`OpenAI/GPT-4o-mini`, `openai/gpt-4o-mini` and `gpt-4o-mini` are one row, one name in
    the audit and the hold record; the same model at another provider is its own row."""
    limiter.apply_policy(
        Policy.from_toml("[projects.p]\nallow_models = ['*']\ndeny_models = ['*nano*']\n")
    )
    spellings = ["OpenAI/GPT-4o-mini", "openai/gpt-4o-mini", "gpt-4o-mini", "GPT-4O-MINI"]
    for i, name in enumerate(spellings):
        r = limiter.reserve("p", name, est_tokens=10, reservation_id=f"s{i}")
        assert r.decision.model == name  # the decision answers in the caller's words
        assert stored_model(rclient, "p", f"s{i}") == "gpt-4o-mini"
        r.settle(input_tokens=10, output_tokens=1)
    limiter.reserve("p", "azure/gpt-4o-mini", est_tokens=10).settle(
        input_tokens=10, output_tokens=0
    )
    limiter.reserve("p", "gpt-4o-mini", est_tokens=10, provider="azure").settle(
        input_tokens=10, output_tokens=0
    )
    limiter.try_reserve("p", "OpenAI/GPT-4.1-Nano", est_tokens=10)
    report = limiter.usage("p")
    assert report.by_model.keys() == {"gpt-4o-mini", "azure/gpt-4o-mini"}
    assert report.by_model["gpt-4o-mini"].requests == 4
    assert report.by_model["azure/gpt-4o-mini"].requests == 2
    assert [e["model"] for e in audit(rclient, "p", "model.denied")] == ["gpt-4.1-nano"]


def test_a_replay_with_another_spelling_is_the_same_reservation(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models = ['*']\n"))
    first = limiter.reserve("p", "gpt-4o-mini", est_tokens=10, reservation_id="same")
    again = limiter.reserve("p", "OpenAI/GPT-4o-Mini", est_tokens=10, reservation_id="same")
    assert again.decision.replayed and again.decision.hold_usd == first.decision.hold_usd
    with pytest.raises(InvalidRequest, match="already used for model 'gpt-4o-mini'"):
        limiter.reserve("p", "azure/gpt-4o-mini", est_tokens=10, reservation_id="same")
    with pytest.raises(InvalidRequest, match="already used for model 'gpt-4o-mini'"):
        limiter.reserve("p", "gpt-4o-mini", est_tokens=10, reservation_id="same", provider="azure")


def test_settle_by_id_with_a_spelled_model_books_one_row(limiter: Any) -> None:
    """A settle of an id the project does not know, with `model=` in another spelling, is
    priced and attributed as that model."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models = ['*']\n"))
    limiter.reserve("p", "gpt-4o-mini", est_tokens=10).settle(input_tokens=10, output_tokens=0)
    s = limiter.settle(
        "p", "never-reserved", input_tokens=1000, output_tokens=0, model="OpenAI/GPT-4o-Mini"
    )
    assert round(s.cost_usd * 1e9) == nano_of("gpt-4o-mini", "openai", 1000, 0)
    assert limiter.usage("p").by_model.keys() == {"gpt-4o-mini"}
