"""Reserve: plan the request, run reserve.lua, parse the decision; or decide without Redis
(failure mode open)."""

import functools
from time import perf_counter

from prism_limiter.engine._core_base import CoreBase, Held
from prism_limiter.engine._log import logger
from prism_limiter.engine._plan import Request, plan_reserve, request
from prism_limiter.engine._protocol import Op
from prism_limiter.engine._records import (
    Decision,
)
from prism_limiter.engine._replies import (
    decision_from_reply,
    model_message,
)
from prism_limiter.errors import BackendUnavailable, PrismLimiterError

_MAX_STALE_RETRIES = 3


class ReserveOps(CoreBase):
    def reserve(
        self,
        project: str,
        model: str,
        est_tokens: int,
        *,
        max_output_tokens: int | None = None,
        max_cache_write_tokens: int | None = None,
        tags: dict[str, str] | None = None,
        ttl_s: float | None = None,
        reservation_id: str | None = None,
        provider: str | None = None,
    ) -> Op[Held]:
        req = request(
            project,
            model,
            est_tokens,
            max_output_tokens=max_output_tokens,
            max_cache_write_tokens=max_cache_write_tokens,
            tags=tags,
            ttl_s=ttl_s,
            reservation_id=reservation_id,
            provider=provider,
        )
        t0 = perf_counter() if self.listener is not None else 0.0
        for _ in range(_MAX_STALE_RETRIES + 1):
            try:
                yield from self._preflight(req.project)
                rules = yield from self.rules(req.project)
                plan = plan_reserve(rules, req)
                if rules.unregistered and plan.denial is None:
                    # First accepted reserve of a project [defaults] covers: store its copy.
                    yield from self.policies.register(req.project)
                    continue
                reply = yield self._script("reserve", req.project, plan.args)
            except BackendUnavailable as exc:
                degraded = self._degraded(exc, req)
                if self.listener is not None:
                    self._emit("reserved", degraded, perf_counter() - t0)
                return degraded
            kind = self._check_reply(reply)
            if kind == "stale":
                logger.debug("prism.policy.stale", project=req.project, version=rules.version)
                self.policies.forget(req.project)
                continue
            decide = functools.partial(
                decision_from_reply,
                kind=kind,
                reply=reply,
                project=req.project,
                model=req.model,
                canonical=plan.entry.canonical,
                rid=req.reservation_id,
                budgets=plan.budgets,
            )
            fields = (
                req.project,
                req.reservation_id,
                plan.entry.canonical,
                req.tags,
                req.est_tokens,
                plan.out_tokens,
                plan.price,
                plan.budgets,
            )
            # The common case, ok: the decision is built only if it is read.
            held = Held(*fields, decide if kind == "ok" else decide())
            if self.listener is not None:
                self._emit("reserved", held, perf_counter() - t0)
            return held
        raise PrismLimiterError(f"policy of {project!r} kept changing during one reserve")

    def _degraded(self, exc: BackendUnavailable, req: Request) -> Held:
        """Redis cannot answer: raise (closed), or decide without it and say so (open).

        Open mode still enforces the model allow/deny lists (and an unknown price under
        ``on_unknown_price = "deny"``) from the project's cached policy; budgets and rate limits
        cannot be checked. A project this worker never loaded is allowed unchecked.
        """
        if self.settings.failure_mode == "closed":
            if self.listener is not None:
                self._emit("unavailable", "reserve", req.project)
            raise exc
        cached = self.policies.cached(req.project)
        plan = plan_reserve(cached, req) if cached is not None else None
        denial = plan.denial if plan is not None else None
        logger.warning(
            "prism.backend.degraded",
            project=req.project,
            model=req.model,
            reservation_id=req.reservation_id,
            error=str(exc),
            action="denied" if denial else "allowed",
            policy="cached" if cached is not None else "unknown",
        )
        if denial is not None:
            decision = Decision(
                allowed=False,
                project=req.project,
                model=req.model,
                reservation_id=req.reservation_id,
                reason=denial,
                degraded=True,
                message=model_message(req.project, req.model, denial) + " (cached policy)",
            )
        else:
            decision = Decision(
                allowed=True,
                project=req.project,
                model=req.model,
                reservation_id=req.reservation_id,
                degraded=True,
                message=f"allowed without a budget check: {exc}",
            )
        return Held(
            req.project,
            req.reservation_id,
            req.model,
            req.tags,
            req.est_tokens,
            plan.out_tokens if plan is not None else (req.max_output_tokens or 0),
            plan.price if plan is not None else None,
            [],
            decision,
        )
