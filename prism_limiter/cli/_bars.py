"""Terminal bars: a budget's spent / held / remaining, and a row's share of a total."""

from __future__ import annotations

from rich.text import Text

WIDTH = 12


def cells(parts: list[float], whole: float, width: int = WIDTH) -> list[int]:
    """How many of ``width`` cells each part gets: rounded so that they never exceed the width
    (parts beyond ``whole`` are clipped) and a non-zero part shows at least one cell."""
    if whole <= 0:
        return [0 for _ in parts]
    out, used = [], 0
    for part in parts:
        n = round(max(0.0, part) / whole * width)
        if part > 0 and n == 0:
            n = 1
        n = min(n, width - used)
        out.append(n)
        used += n
    return out


def budget_bar(spent: float, held: float, cap: float, warn_at: tuple[float, ...]) -> Text:
    """``█`` spent, ``▒`` held, ``░`` remaining of the cap; spent turns yellow past the first
    warn threshold and red at the cap."""
    n_spent, n_held = cells([spent, held], cap)
    used = spent / cap if cap > 0 else 1.0
    colour = "red" if used >= 1 else "yellow" if warn_at and used >= min(warn_at) else "green"
    bar = Text()
    bar.append("█" * n_spent, style=colour)
    bar.append("▒" * n_held, style="blue")
    bar.append("░" * (WIDTH - n_spent - n_held), style="dim")
    return bar


def share_bar(value: float, total: float, width: int = 12) -> Text:
    [n] = cells([value], total, width)
    return Text("█" * n + " " * (width - n), style="cyan")
