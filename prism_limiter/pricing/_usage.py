"""Token counts from provider usage objects or dicts (OpenAI, Anthropic, Gemini).

Each provider counts input differently; everything becomes :class:`TokenUsage`, whose
``input_tokens`` is the *total* input with cache reads and writes as parts of it. Streaming
callers pass the final usage (OpenAI's last chunk, Anthropic's cumulative ``message_delta``,
Gemini's last chunk), never a sum of chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prism_limiter.engine import _validate
from prism_limiter.errors import InvalidRequest
from prism_limiter.pricing._pricing import TokenUsage


def _mapping(obj: Any) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return obj
    for method in ("model_dump", "to_dict", "dict"):
        fn = getattr(obj, method, None)
        if callable(fn):
            try:
                out = fn()
            except TypeError:
                continue
            if isinstance(out, Mapping):
                return out
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    raise InvalidRequest(f"cannot read a usage from {type(obj).__name__}")


def _count(m: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = m.get(name)
        if value is not None:
            return _validate.tokens(f"usage.{name}", value)
    return 0


def from_usage(obj: Any) -> TokenUsage:
    """Read a usage object or dict of any supported provider (or a whole response holding one)."""
    m = _mapping(obj)
    for wrapper in ("usage", "usageMetadata", "usage_metadata"):
        if wrapper in m and m[wrapper] is not None:
            m = _mapping(m[wrapper])
            break
    if "promptTokenCount" in m or "prompt_token_count" in m:  # Gemini usageMetadata
        total_in = _count(m, "promptTokenCount", "prompt_token_count") + _count(
            m, "toolUsePromptTokenCount", "tool_use_prompt_token_count"
        )
        out = _count(m, "candidatesTokenCount", "candidates_token_count") + _count(
            m, "thoughtsTokenCount", "thoughts_token_count"
        )
        cached = _count(m, "cachedContentTokenCount", "cached_content_token_count")
        return TokenUsage(input_tokens=total_in, output_tokens=out, cache_read_tokens=cached)
    if "prompt_tokens" in m:  # OpenAI Chat Completions: prompt includes cached tokens
        details = _mapping(m.get("prompt_tokens_details"))
        return TokenUsage(
            input_tokens=_count(m, "prompt_tokens"),
            output_tokens=_count(m, "completion_tokens"),
            cache_read_tokens=_count(details, "cached_tokens"),
            cache_write_tokens=_count(details, "cache_write_tokens"),
        )
    if "input_tokens_details" in m:  # OpenAI Responses: input includes cached tokens
        details = _mapping(m.get("input_tokens_details"))
        return TokenUsage(
            input_tokens=_count(m, "input_tokens"),
            output_tokens=_count(m, "output_tokens"),
            cache_read_tokens=_count(details, "cached_tokens"),
            cache_write_tokens=_count(details, "cache_write_tokens"),
        )
    if "input_tokens" in m or "output_tokens" in m:  # Anthropic: input excludes cache traffic
        read = _count(m, "cache_read_input_tokens")
        write = _count(m, "cache_creation_input_tokens")
        split = _mapping(m.get("cache_creation"))
        write_1h = _count(split, "ephemeral_1h_input_tokens")
        return TokenUsage(
            input_tokens=_count(m, "input_tokens") + read + write,
            output_tokens=_count(m, "output_tokens"),
            cache_read_tokens=read,
            cache_write_tokens=max(write, write_1h),
            cache_write_1h_tokens=write_1h,
        )
    raise InvalidRequest(f"unrecognised usage shape with keys {sorted(m)[:8]}")


def from_counts(
    input_tokens: Any,
    output_tokens: Any,
    cache_read_tokens: Any = 0,
    cache_write_tokens: Any = 0,
    cache_write_1h_tokens: Any = 0,
) -> TokenUsage:
    """Explicit counts; ``input_tokens`` is the total input, cache counts are parts of it.

    ``TokenUsage`` checks each count (``InvalidRequest`` naming the field)."""
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
    )
