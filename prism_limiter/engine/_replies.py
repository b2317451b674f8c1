"""Replies of the scripts parsed into records (pure functions, shared by both faces)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from prism_limiter.engine._keys import FS, LS
from prism_limiter.engine._money import nano_to_usd
from prism_limiter.engine._protocol import as_int, text
from prism_limiter.engine._records import BudgetState, BudgetWarning, Decision, Settlement
from prism_limiter.errors import InvalidRequest
from prism_limiter.policy._rules import BudgetMatch

_MOMENTS: dict[int, datetime] = {}  # period boundaries repeat on every reply


def ts(seconds: Any) -> datetime | None:
    value = int(seconds)
    if not value:
        return None
    moment = _MOMENTS.get(value)
    if moment is None:
        if len(_MOMENTS) >= 4096:
            _MOMENTS.clear()
        try:
            moment = _MOMENTS[value] = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # not a time this platform can hold
            return None
    return moment


def _budget_label(budget: str, split: str | None) -> str:
    return f"budget {budget!r}" + (f" for {split!r}" if split else "")


def model_message(project: str, model: str, reason: str) -> str:
    """Why a model may not be used, in words."""
    messages = {
        "model-denied": f"model {model!r} is denied for project {project!r}",
        "model-not-allowed": f"model {model!r} is not in the allow list of project {project!r}",
        "no-policy": f"project {project!r} has no policy (and there are no defaults)",
    }
    return messages.get(reason, reason)


def decision_from_reply(
    *,
    kind: str,
    reply: list[Any],
    project: str,
    model: str,
    canonical: str,
    rid: str,
    budgets: list[BudgetMatch],
) -> Decision:
    """The decision of a reserve reply (dup, denied model/budget/rate, or ok).

    ``model`` is the name as the caller wrote it (the decision answers in their words);
    ``canonical`` its canonical spelling (``_names``), which the record of a replayed id must
    carry: any spelling of the same model, at the same provider, is the same request.
    """

    def make(**fields: Any) -> Decision:
        return Decision(project=project, model=model, reservation_id=rid, **fields)

    if kind == "ended":
        ended = {"S": "settled", "R": "released", "X": "expired", "E": "expired"}
        raise InvalidRequest(
            f"reservation {rid!r} already ended ({ended.get(text(reply[1]), 'ended')}): a"
            " retry of a lost reply replays a live hold, but a new attempt needs a new id"
        )
    if kind == "dup":
        hold, deadline, stored_model = as_int(reply[1]), as_int(reply[2]), text(reply[3])
        if stored_model != canonical:
            raise InvalidRequest(
                f"reservation id {rid!r} was already used for model {stored_model!r}"
            )
        return make(
            allowed=True,
            replayed=True,
            hold_usd=nano_to_usd(hold),
            expires_at=datetime.fromtimestamp(deadline / 1000, UTC),
            message=f"reservation {rid!r} is already held; nothing changed",
        )
    if kind == "denied":
        what = text(reply[1])
        if what == "model":
            reason = text(reply[2])
            return make(allowed=False, reason=reason, message=model_message(project, model, reason))
        if what == "rate":
            return rate_denial(make, reply)
        budget, split = text(reply[2]), text(reply[3]) or None
        cap, spent, held, hold = (as_int(x) for x in reply[4:8])
        resets = ts(reply[9])
        over = spent + held + hold - cap
        now = datetime.now(UTC)
        label = _budget_label(budget, split)
        return make(
            allowed=False,
            reason="budget",
            budget=budget,
            split_value=split,
            cap_usd=nano_to_usd(cap),
            spent_usd=nano_to_usd(spent),
            held_usd=nano_to_usd(held),
            hold_usd=nano_to_usd(hold),
            over_by_usd=nano_to_usd(over),
            resets_at=resets,
            retry_after_s=max(0.0, (resets - now).total_seconds()) if resets else None,
            message=(
                f"{label} would go over its cap of ${nano_to_usd(cap):.6f} by"
                f" ${nano_to_usd(over):.6f} (spent ${nano_to_usd(spent):.6f}, held"
                f" ${nano_to_usd(held):.6f}, this request ${nano_to_usd(hold):.6f})"
            ),
        )
    # ok: hold, deadline, now, six values per budget, then the shadow limits that would deny
    hold = as_int(reply[1])
    states, warnings = [], []
    for i, b in enumerate(budgets):
        spent, held, cap, start, end, extra = reply[4 + 6 * i : 10 + 6 * i]
        spent_n, held_n, cap_n = as_int(spent), as_int(held), as_int(cap)
        states.append(
            BudgetState(
                budget=b.budget.id,
                split_value=b.split_value,
                cap_usd=nano_to_usd(cap_n),
                spent_usd=nano_to_usd(spent_n),
                held_usd=nano_to_usd(held_n),
                remaining_usd=nano_to_usd(cap_n - spent_n - held_n),
                period_start=ts(start),
                resets_at=ts(end),
                override_usd=nano_to_usd(as_int(extra)),
                mode=b.budget.mode,
            )
        )
        # Booked spend only, the rule of the budget.warn audit: holds are upper bounds.
        used = spent_n / cap_n if cap_n else 1.0
        crossed = [f for f in b.budget.warn_at if used >= f]
        if crossed:
            warnings.append(
                BudgetWarning(
                    budget=b.budget.id,
                    split_value=b.split_value,
                    threshold=max(crossed),
                    used_fraction=used,
                )
            )
    base = 4 + 6 * len(budgets)
    shadowed = [text(x).split(LS, 1) for x in reply[base + 1 : base + 1 + as_int(reply[base])]]
    return make(
        allowed=True,
        hold_usd=nano_to_usd(hold),
        expires_at=datetime.fromtimestamp(as_int(reply[2]) / 1000, UTC),
        budgets=tuple(states),
        warnings=tuple(warnings),
        would_block=tuple(name for kind, name in shadowed if kind == "b"),
        would_limit=tuple(name for kind, name in shadowed if kind == "r"),
        resets_at=min((s.resets_at for s in states if s.resets_at), default=None),
    )


def rate_denial(make: Callable[..., Decision], reply: list[Any]) -> Decision:
    limit, split, kind = text(reply[2]), text(reply[3]) or None, text(reply[4])
    retry_ms, value = as_int(reply[5]), as_int(reply[6])
    label = f"rate limit {limit!r}" + (f" for {split!r}" if split else "")
    units = {"rpm": "requests/min", "tpm": "tokens/min", "tpm-too-large": "tokens/min"}
    if kind == "tpm-too-large":
        message = (
            f"{label}: this request needs more tokens than the bucket of {value} tokens/min"
            " can ever hold; it can never fit, retrying will not help"
        )
    elif kind == "concurrency":
        message = f"{label}: {value} concurrent requests are already in flight"
    else:
        message = f"{label}: over {value} {units[kind]}; retry in {retry_ms / 1000:.3f}s"
    return make(
        allowed=False,
        reason="rate-too-large" if kind == "tpm-too-large" else "rate",
        limit=limit,
        limit_kind=kind,
        split_value=split,
        retry_after_s=retry_ms / 1000 if retry_ms >= 0 else None,
        message=message,
    )


def record_model(raw: Any) -> str | None:
    """The model of a stored hold record (None when the record is damaged)."""
    fields = text(raw).split(FS)
    return fields[4] or None if len(fields) > 4 else None


def abandoned(raw: Any) -> bool:
    """Whether a stored hold record ends an id abandoned before its reserve ran (release.lua
    "a": released, naming no model); settle.lua books such an id like an unknown one."""
    fields = text(raw).split(FS)
    return len(fields) > 4 and fields[0] == "R" and not fields[4]


def settlement(rid: str, reply: list[Any]) -> Settlement:
    """The outcome of a settle reply."""
    _, cost_n, hold_n, first, before, over = reply
    cost_i, hold_i, before_s = as_int(cost_n), as_int(hold_n), text(before)
    return Settlement(
        reservation_id=rid,
        cost_usd=nano_to_usd(cost_i),
        hold_usd=nano_to_usd(hold_i),
        refunded_usd=nano_to_usd(max(0, hold_i - cost_i)) if before_s == "H" else 0.0,
        over_estimate=bool(as_int(over)),
        first=bool(as_int(first)),
        late=before_s in ("R", "X", "E", "A"),
        unknown=before_s == "U",
    )


def budget_states(reply: list[Any], modes: Mapping[str, str]) -> list[BudgetState]:
    """Budget instances of a status reply; ``modes``: each budget id's policy mode."""
    out = []
    for i in range(3, len(reply), 8):
        _, label, cap, spent, held, start, end, extra = reply[i : i + 8]
        budget, _, split = text(label).partition(LS)
        cap_n, spent_n, held_n = as_int(cap), as_int(spent), as_int(held)
        out.append(
            BudgetState(
                budget=budget,
                split_value=split or None,
                cap_usd=nano_to_usd(cap_n),
                spent_usd=nano_to_usd(spent_n),
                held_usd=nano_to_usd(held_n),
                remaining_usd=nano_to_usd(cap_n - spent_n - held_n),
                period_start=ts(start),
                resets_at=ts(end),
                override_usd=nano_to_usd(as_int(extra)),
                mode="shadow" if modes.get(budget) == "shadow" else "enforce",
            )
        )
    return out
