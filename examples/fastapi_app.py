"""FastAPI (Starlette) precheck: 429 with Retry-After and budget headers; settle after the call.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency annotations.)

Run it:  PRISM_REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app
Callers tag requests with ``X-Prism-Tags: team=search, feature=autocomplete``.
"""

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from prism_limiter import (
    AsyncLimiter,
    AsyncReservation,
    InvalidRequest,
    LimitExceeded,
    decision_headers,
    estimate_tokens,
    parse_tags_header,
)


class Prompt(BaseModel):
    prompt: str


def create_app(limiter: AsyncLimiter, llm: Any) -> FastAPI:
    """``llm(prompt) -> (text, usage)`` stands for your provider call."""
    app = FastAPI()

    async def governed(
        body: Prompt, x_prism_tags: Annotated[str, Header()] = ""
    ) -> AsyncIterator[AsyncReservation]:
        try:
            tags = parse_tags_header(x_prism_tags)
            est = estimate_tokens(body.prompt, "gpt-4o-mini")
            reservation = await limiter.reserve(
                "search", "gpt-4o-mini", est_tokens=est, max_output_tokens=256, tags=tags
            )
        except LimitExceeded as exc:
            raise HTTPException(
                429, detail=exc.decision.message, headers=decision_headers(exc.decision)
            ) from None
        except InvalidRequest as exc:
            raise HTTPException(400, detail=str(exc)) from None
        async with reservation:  # an exception in the handler releases the hold
            yield reservation

    @app.post("/complete")
    async def complete(
        body: Prompt, r: Annotated[AsyncReservation, Depends(governed)]
    ) -> JSONResponse:
        text, usage = await llm(body.prompt)
        settled = await r.settle(usage)
        return JSONResponse(
            {"text": text, "cost_usd": settled.cost_usd}, headers=decision_headers(r.decision)
        )

    return app


async def _fake_llm(prompt: str) -> tuple[str, dict[str, int]]:
    return "ok", {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": 20}


app = create_app(AsyncLimiter.from_url(os.environ.get("PRISM_REDIS_URL", "memory://")), _fake_llm)
