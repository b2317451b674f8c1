"""End to end: the real openai SDK calls a local OpenAI-compatible server through the limiter."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import ROUND_CEILING
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from _helpers import held_nano, spent_nano
from genai_prices import Usage, calc_price
from openai.types.chat import ChatCompletionMessageParam

from prism_limiter import AsyncLimiter, Limiter, Policy, estimate_tokens

pytestmark = pytest.mark.usefixtures("rclient")

USAGE = {
    "prompt_tokens": 1830,
    "completion_tokens": 212,
    "total_tokens": 2042,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
POLICY = Policy.from_toml(
    "[projects.app]\nallow_models=['gpt-4o-mini']\n[[projects.app.budgets]]\nid='m'\nusd=10\n"
)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for word in ("hel", "lo"):
                chunk = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            final = {**base, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            return
        reply = {
            **base,
            "object": "chat.completion",
            "usage": USAGE,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def llm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _expected_nano() -> int:
    price = calc_price(
        Usage(input_tokens=1830, cache_read_tokens=1024, output_tokens=212),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    return int((price * 10**9).to_integral_value(rounding=ROUND_CEILING))


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Summarise the quarterly report. " * 40}
]


def test_sync_sdk_through_the_limiter(redis_url: str, llm_url: str, rclient: Any) -> None:
    """reserve -> openai call -> settle(resp.usage): spend equals genai-prices' cost."""
    client = openai.OpenAI(base_url=llm_url, api_key="test")
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(POLICY)
        est = estimate_tokens(MESSAGES, "gpt-4o-mini")
        with lim.reserve("app", "gpt-4o-mini", est_tokens=est, max_output_tokens=256) as r:
            resp = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=256,
            )
            r.settle(resp.usage)
    assert spent_nano(rclient, "app", "m") == _expected_nano()
    assert held_nano(rclient, "app", "m") == 0


def test_streaming_settles_the_final_usage_only(redis_url: str, llm_url: str, rclient: Any) -> None:
    """Streaming with include_usage: the last chunk's usage is booked, chunks are not summed."""

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=llm_url, api_key="test")
        async with AsyncLimiter.from_url(redis_url) as lim:
            await lim.apply_policy(POLICY)
            async with await lim.reserve("app", "gpt-4o-mini", est_tokens=900) as r:
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                final = None
                async for chunk in stream:
                    final = chunk.usage or final
                await r.settle(final)
        await client.close()

    asyncio.run(main())
    assert spent_nano(rclient, "app", "m") == _expected_nano()
    assert held_nano(rclient, "app", "m") == 0
