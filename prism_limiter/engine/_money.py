"""Money inside Redis: integer nano-dollars (1 nUSD = 1e-9 USD).

Lua numbers are doubles, exact for integers up to 2**53, so every counter is exact up to
about $9,007,199. A single token of the cheapest priced model costs tens of nano-dollars, so no
request is rounded to zero; each request's cost is rounded *up* to the next nano-dollar.
"""

from __future__ import annotations

from decimal import Decimal

from prism_limiter.errors import InvalidRequest

NANO_PER_USD = 1_000_000_000
MAX_NANO = 2**53 - 1
MAX_USD = MAX_NANO // NANO_PER_USD  # 9_007_199


def usd_to_nano(kind: str, usd: object) -> int:
    """A dollar amount from a policy or a caller, as nano-dollars (rounded to nearest)."""
    if isinstance(usd, bool) or not isinstance(usd, int | float | Decimal):
        raise InvalidRequest(f"{kind} must be a number of US dollars, got {usd!r}")
    value = Decimal(str(usd)) if isinstance(usd, float) else Decimal(usd)
    if not value.is_finite() or value < 0 or value > MAX_USD:
        raise InvalidRequest(f"{kind} must be between 0 and {MAX_USD:,} USD, got {usd!r}")
    return int((value * NANO_PER_USD).to_integral_value())


def nano_to_usd(nano: int) -> float:
    return nano / NANO_PER_USD


def pico_to_nano_ceil(pico: int) -> int:
    return -(-pico // 1000)
