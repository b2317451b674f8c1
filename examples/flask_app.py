"""Flask (WSGI) precheck: the same contract as the FastAPI example, synchronously.

Run it:  PRISM_REDIS_URL=redis://localhost:6379/0 flask --app examples.flask_app run
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from prism_limiter import (
    TAGS_HEADER,
    InvalidRequest,
    Limiter,
    LimitExceeded,
    decision_headers,
    estimate_tokens,
    parse_tags_header,
)


def create_app(limiter: Limiter, llm: Callable[[str], tuple[str, Any]]) -> Flask:
    app = Flask(__name__)

    @app.post("/complete")
    def complete() -> Any:
        prompt = (request.get_json(silent=True) or {}).get("prompt", "")
        try:
            tags = parse_tags_header(request.headers.get(TAGS_HEADER, ""))
            r = limiter.reserve(
                "search",
                "gpt-4o-mini",
                est_tokens=estimate_tokens(prompt, "gpt-4o-mini"),
                max_output_tokens=256,
                tags=tags,
            )
        except LimitExceeded as exc:
            return jsonify(error=exc.decision.message), 429, decision_headers(exc.decision)
        except InvalidRequest as exc:
            return jsonify(error=str(exc)), 400
        with r:  # an exception in the LLM call releases the hold
            text, usage = llm(prompt)
            settled = r.settle(usage)
        return jsonify(text=text, cost_usd=settled.cost_usd), 200, decision_headers(r.decision)

    return app


def _fake_llm(prompt: str) -> tuple[str, dict[str, int]]:
    return "ok", {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": 20}


app = create_app(Limiter.from_url(os.environ.get("PRISM_REDIS_URL", "memory://")), _fake_llm)
