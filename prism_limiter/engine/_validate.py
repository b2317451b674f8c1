"""Input checks shared by every operation: bad input raises ``InvalidRequest`` before any I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from prism_limiter.errors import InvalidRequest

# Names that reach a Redis key (projects) or a field (budget ids, tag keys) are kept to a small
# alphabet; tag *values* may hold anything printable and are escaped where they are stored.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@\-]{0,127}\Z")
# Control characters break the scripts' separators; a lone surrogate (U+D800-U+DFFF) cannot be
# encoded as UTF-8, so redis-py would fail on it after the first writes.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

MAX_TAGS = 16
MAX_TAG_VALUE = 256
MAX_TOKENS = 100_000_000
MAX_TTL_S = 7 * 86400
RESERVATION_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")


def is_name(value: str) -> bool:
    return _NAME.match(value) is not None


def name(kind: str, value: object) -> str:
    """A project, budget or tag key: 1-64 of ``A-Z a-z 0-9 _ . -``, starting alphanumeric."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidRequest(
            f"{kind} must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit,"
            f" got {value!r}"
        )
    return value


def model(value: object) -> str:
    if not isinstance(value, str) or not _MODEL.match(value):
        raise InvalidRequest(
            f"model must be 1-128 characters of A-Z a-z 0-9 _ . : / @ -, got {value!r}"
        )
    return value


def reservation_id(value: object) -> str:
    if not isinstance(value, str) or not RESERVATION_ID.match(value):
        raise InvalidRequest(
            f"reservation_id must be 1-128 characters of A-Z a-z 0-9 _ . : -, got {value!r}"
        )
    return value


def tokens(kind: str, value: object, *, allow_none: bool = False) -> int:
    """A token count: a real int (not bool, not float), 0 <= n <= 100 million."""
    if value is None and allow_none:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{kind} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= MAX_TOKENS:
        raise InvalidRequest(f"{kind} must be between 0 and {MAX_TOKENS:,}, got {value}")
    # An int subclass (IntEnum) as its plain value: redis-py would send its repr.
    return value if type(value) is int else int(value)


def seconds(kind: str, value: object, *, maximum: float = MAX_TTL_S) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{kind} must be a number of seconds, got {value!r}")
    if math.isnan(value) or not 0 < value <= maximum:
        raise InvalidRequest(f"{kind} must be > 0 and <= {maximum:g} seconds, got {value!r}")
    return float(value)


def _unsafe(value: str) -> str | None:
    """Why ``value`` may not be stored (a control character, a lone surrogate), or None."""
    bad = _UNSAFE.search(value)
    if bad is None:
        return None
    if bad.group() >= "\ud800":
        return "holds a lone surrogate, which cannot be encoded as UTF-8"
    return "holds a control character or newline"


def tag_value(key: str, value: object) -> str:
    """A tag (or split) value: 1-256 characters, no control character, valid UTF-8."""
    if not isinstance(value, str):
        raise InvalidRequest(f"tag {key!r} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_TAG_VALUE:
        raise InvalidRequest(f"tag {key!r} must be 1-{MAX_TAG_VALUE} characters, got {len(value)}")
    why = _unsafe(value)
    if why is not None:
        raise InvalidRequest(f"tag {key!r} {why}: {value!r}")
    return value


# Tag sets already checked (exactly these str keys and values, in this order) -> the sorted
# result: callers repeat a handful of tag sets, so the checks run once per set.
_VALID_TAGS: dict[tuple[tuple[object, object], ...], tuple[tuple[str, str], ...]] = {}


def tags(value: object) -> dict[str, str]:
    """Tags as a plain sorted dict; at most 16, keys are names, values printable strings."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"tags must be a mapping of str to str, got {type(value).__name__}")
    if len(value) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags are allowed, got {len(value)}")
    items = tuple(value.items())
    try:
        known = _VALID_TAGS.get(items)
    except TypeError:  # an unhashable key or value: refused below
        known = None
    if known is not None:
        return dict(known)
    out = {name("tag key", k): tag_value(k, v) for k, v in value.items()}
    checked = dict(sorted(out.items()))
    if len(_VALID_TAGS) >= 10_000:
        _VALID_TAGS.clear()
    _VALID_TAGS[items] = tuple(checked.items())
    return checked


def text(kind: str, value: object, *, limit: int = 256) -> str:
    """Free text (actor, reason): 1..limit characters, no control character, valid UTF-8."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRequest(f"{kind} must be 1-{limit} printable characters, got {value!r}")
    why = _unsafe(value)
    if why is not None:
        raise InvalidRequest(f"{kind} {why}: {value!r}")
    return value
