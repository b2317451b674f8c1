"""Flask (WSGI) precheck: the same contract as the FastAPI example, synchronously.

403 for a model the policy refuses or a project without a policy, 429 with ``Retry-After`` for
a spent budget or a rate limit, 400 for a bad tag header, 503 when Redis cannot answer;
``decision_headers`` on every answer of the limiter.

Run it from the repository root (``pip install '.[examples]'``)::

    flask --app examples.flask_app run

It uses ``PRISM_REDIS_URL`` when set, else the embedded ``memory://`` store (one process), and
applies the ``search`` project of ``examples/policy.toml`` before it serves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from prism_limiter import (
    TAGS_HEADER,
    BackendUnavailable,
    InvalidRequest,
    Limiter,
    LimitExceeded,
    ModelNotAllowed,
    Policy,
    decision_headers,
    estimate_tokens,
    parse_tags_header,
)

PROJECT = "search"
POLICY_FILE = Path(__file__).with_name("policy.toml")

LLM = Callable[[str, str], tuple[str, Any]]
"""``llm(model, prompt) -> (text, usage)`` stands for your provider call."""


def own_policy() -> Policy:
    """This app's project in ``examples/policy.toml``; applying it leaves other projects alone."""
    return Policy(projects={PROJECT: Policy.load(POLICY_FILE).projects[PROJECT]})


def denial_status(exc: LimitExceeded) -> int:
    """403 when retrying will not help (model policy, no policy), 429 when waiting may."""
    return 403 if isinstance(exc, ModelNotAllowed) else 429


def create_app(limiter: Limiter, llm: LLM, policy: Policy | None = None) -> Flask:
    """The app applies ``policy`` (when given) before it is returned, so before it serves."""
    if policy is not None:
        limiter.apply_policy(policy, actor="examples.flask_app")
    app = Flask(__name__)
    app.extensions["prism_limiter"] = limiter

    @app.post("/complete")
    def complete() -> Any:
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        prompt = str(body.get("prompt", ""))
        model = str(body.get("model", "gpt-4o-mini"))
        try:
            tags = parse_tags_header(request.headers.get(TAGS_HEADER, ""))
            r = limiter.reserve(
                PROJECT,
                model,
                est_tokens=estimate_tokens(prompt, model),
                max_output_tokens=256,
                tags=tags,
            )
        except LimitExceeded as exc:
            status = denial_status(exc)
            return jsonify(error=exc.decision.message), status, decision_headers(exc.decision)
        except InvalidRequest as exc:
            return jsonify(error=str(exc)), 400
        except BackendUnavailable:
            return jsonify(error="the spend limiter is unavailable"), 503
        with r:  # an exception in the LLM call releases the hold
            text, usage = llm(model, prompt)
            settled = r.settle(usage)
        return jsonify(text=text, cost_usd=settled.cost_usd), 200, decision_headers(r.decision)

    return app


def _fake_llm(model: str, prompt: str) -> tuple[str, dict[str, int]]:
    return "ok", {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": 20}


app = create_app(
    Limiter.from_url(os.environ.get("PRISM_REDIS_URL") or "memory://"), _fake_llm, own_policy()
)
