"""The ``X-Prism-Tags`` header: ``team=search, feature=autocomplete``.

Pairs are separated by commas, key and value by ``=``; spaces around them are ignored. Keys are
tag names; a value that holds ``,``, ``=``, ``%``, spaces or non-ASCII text is percent-encoded
by :func:`format_tags_header` and decoded by :func:`parse_tags_header`.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from prism_limiter.engine import _validate
from prism_limiter.errors import InvalidRequest

HEADER = "X-Prism-Tags"
MAX_HEADER = 4096


def parse_tags_header(value: str) -> dict[str, str]:
    """Tags from a header value; duplicates, empty keys, too many or too long raise
    ``InvalidRequest``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{HEADER} must be a string")
    if len(value) > MAX_HEADER:
        raise InvalidRequest(f"{HEADER} is longer than {MAX_HEADER} characters")
    tags: dict[str, str] = {}
    if not value.strip():
        return tags
    for item in value.split(","):
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep:
            raise InvalidRequest(f"{HEADER}: {item.strip()!r} is not key=value")
        if not key:
            raise InvalidRequest(f"{HEADER}: empty key in {item.strip()!r}")
        if key in tags:
            raise InvalidRequest(f"{HEADER}: duplicate key {key!r}")
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{HEADER}: bad percent-encoding in {raw!r}") from None
        tags[key] = decoded
    return _validate.tags(tags)


def format_tags_header(tags: dict[str, str]) -> str:
    """The header value for ``tags`` (validated; values percent-encoded where needed)."""
    checked = _validate.tags(tags)
    return ", ".join(f"{k}={quote(v, safe=':/@.-_~')}" for k, v in checked.items())
