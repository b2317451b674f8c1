"""Fuzzing the public API and the policy parser with hostile values.

Numbers at and beyond 2^53, NaN/inf, booleans as ints, unicode, the separators the scripts
and keys use (``\\x1e \\x1f | = { } :``) in every string, long values and many tags: the only
errors are ``InvalidRequest`` and ``PolicyError``, never a Lua or Redis error, and a refused
call leaves the keyspace exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import hypothesis.strategies as st
import pytest
from _helpers import keyspace
from hypothesis import HealthCheck, given, settings

from prism_limiter import InvalidRequest, Limiter, LimitExceeded, Policy, PolicyError

POLICY = """
[projects.p]
allow_models = ["*"]
on_unknown_price = "allow"
[[projects.p.budgets]]
id = "b"
usd = 1000.0
split_by = "customer"
[[projects.p.rate_limits]]
id = "r"
rpm = 100000
split_by = "customer"
"""
SEPARATORS = ["\x1e", "\x1f", "|", "=", "{", "}", ":", ",", "%", "&", "\n", " "]
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(SEPARATORS).map(lambda s: f"a{s}b"),
    st.just("x" * 10_000),
    st.just("\ud800"),
    st.just(""),
)
nasty_number = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, -1, 0, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def lim(redis_url: str) -> Any:
    limiter = Limiter.from_url(redis_url)
    yield limiter
    limiter.close()


@pytest.fixture
def applied(lim: Limiter, rclient: Any) -> Limiter:
    lim.apply_policy(Policy.from_toml(POLICY))
    return lim


def _call(rclient: Any, fn: Any) -> None:
    """Run fn: allowed, denied, or refused with nothing written."""
    before = keyspace(rclient)
    try:
        fn()
    except (InvalidRequest, PolicyError):
        assert keyspace(rclient) == before
    except LimitExceeded:
        pass


@FUZZ
@given(
    project=nasty_text,
    model=nasty_text,
    est=nasty_number,
    out=nasty_number,
    tags=st.dictionaries(nasty_text, nasty_text, max_size=20),
    rid=st.one_of(st.none(), nasty_text),
)
def test_reserve_only_refuses_cleanly(
    applied: Limiter,
    rclient: Any,
    project: Any,
    model: Any,
    est: Any,
    out: Any,
    tags: Any,
    rid: Any,
) -> None:
    """reserve with hostile arguments: allowed, denied, or InvalidRequest with nothing written."""

    def reserve() -> None:
        r = applied.reserve(
            project, model, est_tokens=est, max_output_tokens=out, tags=tags, reservation_id=rid
        )
        r.release()

    _call(rclient, reserve)


@FUZZ
@given(
    counts=st.dictionaries(
        st.sampled_from(
            [
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "cache_write_1h_tokens",
                "reasoning_tokens",
            ]
        ),
        nasty_number,
    ),
    split=nasty_text,
)
def test_settle_only_refuses_cleanly(
    applied: Limiter, rclient: Any, counts: dict[str, Any], split: Any
) -> None:
    """settle with hostile counts, and overrides with hostile split values and text."""
    r = applied.reserve("p", "gpt-4o", est_tokens=10, tags={"customer": "c"})
    _call(rclient, lambda: r.settle(**counts))
    _call(
        rclient,
        lambda: applied.grant_override(
            "p",
            "b",
            usd=1,
            ttl_s=60,
            requested_by=split,
            approved_by="approver",
            reason=split,
            split_value=split,
        ),
    )


@FUZZ
@given(
    cap=nasty_number,
    warn=st.lists(nasty_number, max_size=4),
    name=nasty_text,
    rpm=nasty_number,
)
def test_policy_parser_only_raises_policy_error(cap: Any, warn: Any, name: Any, rpm: Any) -> None:
    """A policy built from hostile values parses or raises PolicyError, nothing else."""
    doc = {
        "projects": {
            str(name): {
                "allow_models": [name],
                "budgets": [{"id": name, "usd": cap, "warn_at": warn, "split_by": name}],
                "rate_limits": [{"id": "r", "rpm": rpm}],
            }
        }
    }
    toml = _to_toml(doc)
    if toml is None:
        return
    with contextlib.suppress(PolicyError):
        Policy.from_toml(toml)


def _to_toml(value: Any) -> str | None:
    """A tiny TOML writer for the fuzzed shape (None: not expressible in TOML)."""

    def scalar(v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return repr(v)
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return None
            return json.dumps(v)
        if isinstance(v, list):
            items = [scalar(x) for x in v]
            kept = [x for x in items if x is not None]
            return None if len(kept) != len(items) else "[" + ", ".join(kept) + "]"
        if isinstance(v, dict):
            parts: list[str] = []
            for k, x in v.items():
                sk, sx = scalar(k), scalar(x)
                if sk is None or sx is None:
                    return None
                parts.append(f"{sk} = {sx}")
            return "{" + ", ".join(parts) + "}"
        return None

    lines = []
    for project, body in value["projects"].items():
        key = scalar(project)
        if key is None:
            return None
        for field, v in body.items():
            sv = scalar(v)
            if sv is None:
                return None
            lines.append(f"projects.{key}.{field} = {sv}")
    return "\n".join(lines) + "\n"
