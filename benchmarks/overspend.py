"""Correctness beside speed: how far past one cap 32 concurrent workers spend, with the naive
check-then-increment limiter people write themselves, and with ours.

Every request costs the same ($0.01; the cap is $1.00, so 100 requests fit). 32 threads start
together (a barrier) and each keeps sending requests until one is refused:

- naive: ``GET spent``; if ``spent + price <= cap``, (the model call,) ``INCRBYFLOAT spent
  price``. Between the check and the increment other workers check the same old total.
- ours: ``reserve`` (the hold is the price: a negotiated price, every token at its maximum),
  (the model call,) ``settle`` with exactly the estimated tokens.

Runs once with no model call between the check and the booking, and once with a simulated call
of ``--call-ms`` (a sleep). Overspend is the total booked as a multiple of the cap.

    python benchmarks/overspend.py [--workers N] [--call-ms 0 20] [--json]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from _common import emit, environment, header, private_server, progress, table

from prism_limiter import Limiter, Policy

PRICE_USD = 0.01
CAP_USD = 1.00
MODEL = "bench-model"
# $1 per million input tokens and $2 per million output: 5000 in + 2500 out = $0.01 exactly.
EST_IN, EST_OUT = 5000, 2500
POLICY = f"""
[projects.ovs]
allow_models = ["{MODEL}"]
[projects.ovs.prices."{MODEL}"]
input_mtok = 1.0
output_mtok = 2.0
[[projects.ovs.budgets]]
id = "cap"
usd = {CAP_USD}
period = "total"
"""


def _together(workers: int, body: Callable[[], int]) -> list[int]:
    barrier = threading.Barrier(workers)
    counts = [0] * workers

    def run(i: int) -> None:
        barrier.wait()
        counts[i] = body()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def naive(url: str, workers: int, call_s: float) -> dict[str, Any]:
    client = redis.Redis.from_url(url, socket_timeout=5)
    key = f"naive:spent:{call_s}"
    client.delete(key)

    def body() -> int:
        n = 0
        while True:
            spent = float(client.get(key) or 0)
            if spent + PRICE_USD > CAP_USD + 1e-9:
                return n
            if call_s:
                time.sleep(call_s)
            client.incrbyfloat(key, PRICE_USD)
            n += 1

    allowed = sum(_together(workers, body))
    spent = float(client.get(key) or 0)
    client.close()
    return {"allowed": allowed, "spent_usd": spent, "overspend": spent / CAP_USD}


def ours(url: str, workers: int, call_s: float) -> dict[str, Any]:
    lim = Limiter.from_url(url, max_connections=workers + 8)
    project = f"ovs{int(call_s * 1000)}"
    lim.apply_policy(Policy.from_toml(POLICY.replace("projects.ovs", f"projects.{project}")))
    probe = lim.try_reserve(project, MODEL, EST_IN, max_output_tokens=EST_OUT)
    hold = probe.decision.hold_usd
    probe.release()
    if abs(hold - PRICE_USD) > 1e-9:
        raise RuntimeError(f"the hold is {hold} USD, not the price {PRICE_USD}")

    def body() -> int:
        n = 0
        while True:
            r = lim.try_reserve(project, MODEL, EST_IN, max_output_tokens=EST_OUT)
            if not r.allowed:
                return n
            if call_s:
                time.sleep(call_s)
            r.settle(input_tokens=EST_IN, output_tokens=EST_OUT)
            n += 1

    allowed = sum(_together(workers, body))
    spent = sum(b.spent_usd for b in lim.status(project))
    lim.close()
    return {"allowed": allowed, "spent_usd": spent, "overspend": spent / CAP_USD}


def run(workers: int, calls_ms: Sequence[float]) -> dict[str, Any]:
    with private_server() as url:
        client = redis.Redis.from_url(url)
        env = environment(client)
        client.close()
        rows = []
        for ms in calls_ms:
            progress(f"overspend: {workers} workers, model call {ms:g} ms")
            rows.append(
                {
                    "call_ms": ms,
                    "naive": naive(url, workers, ms / 1000),
                    "ours": ours(url, workers, ms / 1000),
                }
            )
    return {
        "benchmark": "overspend",
        "workers": workers,
        "price_usd": PRICE_USD,
        "cap_usd": CAP_USD,
        "fits": round(CAP_USD / PRICE_USD),
        "environment": env,
        "runs": rows,
    }


def render(report: dict[str, Any]) -> str:
    rows = []
    for run_ in report["runs"]:
        for kind in ("naive", "ours"):
            r = run_[kind]
            label = "check-then-INCRBYFLOAT" if kind == "naive" else "reserve+settle"
            rows.append(
                [
                    f"{label}, call {run_['call_ms']:g} ms",
                    r["allowed"],
                    r["spent_usd"],
                    f"{r['overspend']:.2f}x",
                ]
            )
    return "\n".join(
        [
            header(report),
            f"{report['workers']} threads, one cap of ${report['cap_usd']:.2f}, every request"
            f" ${report['price_usd']:.2f} ({report['fits']} fit)",
            "",
            table(["limiter", "allowed", "spent USD", "of the cap"], rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--call-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.workers, args.call_ms), args.json, render)


if __name__ == "__main__":
    main()
