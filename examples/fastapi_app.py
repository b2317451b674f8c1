"""FastAPI (Starlette) precheck: reserve before the LLM call, settle after it.

- 403 when retrying cannot help: a model the policy denies or does not allow, or a project
  without a policy (``ModelNotAllowed``);
- 429 with ``Retry-After`` when a budget is spent or a rate limit is reached (``BudgetExceeded``,
  ``RateLimited``);
- 400 for a bad ``X-Prism-Tags`` header, 503 when Redis cannot answer;
- ``decision_headers`` (``X-Prism-Reservation``, ``X-Prism-Budget-Remaining-USD``, ...) on every
  answer of the limiter; an exception in the handler releases the hold.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency annotations.)

Run it from the repository root (``pip install '.[examples]'``)::

    uvicorn examples.fastapi_app:app

It uses ``PRISM_REDIS_URL`` when set, else the embedded ``memory://`` store (one process), and
applies the ``search`` project of ``examples/policy.toml`` on startup. Callers tag requests with
``X-Prism-Tags: team=search, feature=autocomplete``.
"""

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from prism_limiter import (
    AsyncLimiter,
    AsyncReservation,
    BackendUnavailable,
    InvalidRequest,
    LimitExceeded,
    ModelNotAllowed,
    Policy,
    decision_headers,
    estimate_tokens,
    parse_tags_header,
)

PROJECT = "search"
POLICY_FILE = Path(__file__).with_name("policy.toml")

LLM = Callable[[str, str], Awaitable[tuple[str, Any]]]
"""``await llm(model, prompt) -> (text, usage)`` stands for your provider call."""


class Prompt(BaseModel):
    prompt: str
    model: str = "gpt-4o-mini"


def own_policy() -> Policy:
    """This app's project in ``examples/policy.toml``; applying it leaves other projects alone."""
    return Policy(projects={PROJECT: Policy.load(POLICY_FILE).projects[PROJECT]})


def denial_status(exc: LimitExceeded) -> int:
    """403 when retrying will not help (model policy, no policy), 429 when waiting may."""
    return 403 if isinstance(exc, ModelNotAllowed) else 429


def create_app(limiter: AsyncLimiter, llm: LLM, policy: Policy | None = None) -> FastAPI:
    """The app applies ``policy`` (when given) on startup and closes ``limiter`` on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if policy is not None:
            await limiter.apply_policy(policy, actor="examples.fastapi_app")
        yield
        await limiter.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.limiter = limiter

    async def governed(
        body: Prompt, x_prism_tags: Annotated[str, Header()] = ""
    ) -> AsyncIterator[AsyncReservation]:
        try:
            tags = parse_tags_header(x_prism_tags)
            est = estimate_tokens(body.prompt, body.model)
            reservation = await limiter.reserve(
                PROJECT, body.model, est_tokens=est, max_output_tokens=256, tags=tags
            )
        except LimitExceeded as exc:
            raise HTTPException(
                denial_status(exc),
                detail=exc.decision.message,
                headers=decision_headers(exc.decision),
            ) from None
        except InvalidRequest as exc:
            raise HTTPException(400, detail=str(exc)) from None
        except BackendUnavailable:
            raise HTTPException(503, detail="the spend limiter is unavailable") from None
        async with reservation:  # an exception in the handler releases the hold
            yield reservation

    @app.post("/complete")
    async def complete(
        body: Prompt, r: Annotated[AsyncReservation, Depends(governed)]
    ) -> JSONResponse:
        text, usage = await llm(body.model, body.prompt)
        settled = await r.settle(usage)
        return JSONResponse(
            {"text": text, "cost_usd": settled.cost_usd}, headers=decision_headers(r.decision)
        )

    return app


async def _fake_llm(model: str, prompt: str) -> tuple[str, dict[str, int]]:
    return "ok", {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": 20}


app = create_app(
    AsyncLimiter.from_url(os.environ.get("PRISM_REDIS_URL") or "memory://"),
    _fake_llm,
    own_policy(),
)
