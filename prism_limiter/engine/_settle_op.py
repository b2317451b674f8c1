"""Settle and release: book the actual usage once, or give the hold back; refused for denials."""

from time import perf_counter

from prism_limiter.engine import _validate
from prism_limiter.engine._core_base import CoreBase, Held
from prism_limiter.engine._log import logger
from prism_limiter.engine._money import nano_to_usd
from prism_limiter.engine._plan import settle_fallback
from prism_limiter.engine._protocol import Command, Op, text
from prism_limiter.engine._records import (
    Settlement,
)
from prism_limiter.engine._replies import (
    abandoned,
    record_model,
    settlement,
)
from prism_limiter.errors import BackendUnavailable, InvalidRequest, PrismLimiterError
from prism_limiter.pricing._pricing import TokenUsage


class SettleOps(CoreBase):
    def settle(
        self,
        project: str,
        reservation_id: str,
        usage: TokenUsage,
        *,
        held: Held | None = None,
        model: str | None = None,
        tags: dict[str, str] | None = None,
        provider: str | None = None,
        estimate: bool = False,
    ) -> Op[Settlement]:
        """Book ``usage``. Without ``held`` the record (or ``model``) says how to price it.

        ``estimate``: this books the estimate of a reservation left without a settle; a later
        real settle books the difference to its actual usage, once.

        A reservation taken degraded (Redis down, failure mode open) is booked now like an id
        the project never saw (``settle.unknown``). When Redis cannot take the settle, the usage
        is logged as ``prism.settle.unbooked`` with everything needed to replay it (see the
        README); open mode then returns a ``degraded`` settlement, closed mode raises.
        """
        if held is not None and not held.allowed:
            raise InvalidRequest(
                f"this reservation was denied ({held.decision.reason}): {held.decision.message};"
                " there is nothing to settle"
            )
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        tag_map = _validate.tags(tags) if held is None else held.tags
        model = _validate.model(model) if model is not None else (held.model if held else None)
        t0 = perf_counter() if self.listener is not None else 0.0
        try:
            booked, model = yield from self._settle(
                project,
                rid,
                usage,
                held=held,
                model=model,
                tags=tag_map,
                provider=provider,
                estimate=estimate,
            )
        except BackendUnavailable as exc:
            u = usage
            logger.warning(
                "prism.settle.unbooked",
                project=project,
                reservation_id=rid,
                model=model,
                tags=tag_map,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                cache_write_1h_tokens=u.cache_write_1h_tokens,
                error=str(exc),
            )
            if self.settings.failure_mode == "closed":
                if self.listener is not None:
                    self._emit("unavailable", "settle", project)
                raise
            price = held.price if held is not None else None
            cost = nano_to_usd(price.cost_nano(usage)) if price else 0.0
            if held is not None:
                held.finished = True  # logged for a replay: the block's exit books nothing more
            booked = Settlement(
                reservation_id=rid,
                cost_usd=cost,
                hold_usd=0.0,
                refunded_usd=0.0,
                over_estimate=False,
                first=True,
                late=False,
                degraded=True,
            )
        if self.listener is not None:
            self._emit(
                "settled",
                project,
                model or "",
                tag_map,
                booked,
                estimate=estimate,
                seconds=perf_counter() - t0,
            )
        return booked

    def _settle(
        self,
        project: str,
        rid: str,
        usage: TokenUsage,
        *,
        held: Held | None,
        model: str | None,
        tags: dict[str, str],
        provider: str | None,
        estimate: bool,
    ) -> Op[tuple[Settlement, str]]:
        """Book it; returns the settlement and the model it was priced for."""
        tag_map = tags
        stored = model is None  # read back from the record: its canonical spelling
        yield from self._preflight(project)
        if model is None:
            raw = yield Command(("HGET", self.keys(project).prefix + "holds", rid))
            if raw is None or abandoned(raw):
                raise InvalidRequest(
                    f"reservation {rid!r} is unknown in project {project!r}; pass model= (and"
                    " tags=) to book it anyway"
                )
            model = record_model(raw)
            if model is None:
                raise PrismLimiterError(
                    f"the stored record of reservation {rid!r} is unreadable; pass model= to"
                    " settle it, or release it"
                )
        if held is not None and not held.degraded:
            price, budgets = held.price, held.budgets
        else:
            rules = yield from self.rules(project)
            entry = rules.model(model, provider, stored=stored)
            model, price, budgets = entry.canonical, entry.price, rules.budgets(entry, tag_map)
        cost = price.cost_nano(usage) if price else 0
        u = usage
        head: list[str | int] = [
            rid,
            cost,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
        ]
        mode = "e" if estimate else ""
        reply = yield self._script("settle", project, [*head, mode, ""])
        if self._check_reply(reply) == "unknown":
            # Rare: an id this project does not know (never reserved, taken degraded, or past
            # retention). Book it from what the caller knows, in a second call.
            fallback = settle_fallback(model, tag_map, budgets)
            reply = yield self._script("settle", project, [*head, mode, *fallback])
        if self._check_reply(reply) == "denied":
            raise InvalidRequest(
                f"reservation {rid!r} was denied ({text(reply[1])}): there is nothing to settle"
            )
        if held is not None:
            held.finished = True
        return settlement(rid, reply), model

    def release_held(self, held: Held) -> Op[bool]:
        if not held.allowed:
            raise InvalidRequest(
                f"this reservation was denied ({held.decision.reason}): there is nothing to release"
            )
        if held.degraded:
            held.finished = True  # nothing to give back (a block left now charges nothing)
            return False
        released = yield from self.release(held.project, held.reservation_id)
        held.finished = True
        return released

    def release(self, project: str, reservation_id: str) -> Op[bool]:
        """Return a hold; True when this call released it, False when it had already ended."""
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        t0 = perf_counter() if self.listener is not None else 0.0
        try:
            yield from self._preflight(project)
            reply = yield self._script("release", project, [rid])
        except BackendUnavailable:
            if self.listener is not None:
                self._emit("unavailable", "release", project)
            raise
        kind = self._check_reply(reply)
        if kind == "denied":
            raise InvalidRequest(
                f"reservation {rid!r} was denied ({text(reply[1])}): there is nothing to release"
            )
        released = kind == "released" and text(reply[1]) == "H"
        if self.listener is not None:
            self._emit("released", project, rid, released, perf_counter() - t0)
        return released

    def abandon(self, project: str, reservation_id: str) -> Op[None]:
        """End an id whose reserve's caller was cancelled while the reserve was in flight: a
        hold it took is released, and a reserve still on its way finds the id ended and takes
        nothing (release.lua, "a"). A denied or already ended id is left as it is."""
        yield from self._preflight()
        reply = yield self._script("release", project, [reservation_id, "a"])
        self._check_reply(reply)
