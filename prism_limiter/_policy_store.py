"""Policy in Redis: storing a new version for every project, and the per-project cache.

``apply`` bumps the global version (``<ns>:policy``), registers the listed projects in
``<ns>:projects`` and writes each known project's part, "if newer", into its own hash tag.
A project first seen later (covered by ``[defaults]``) registers itself before it reads the
global document, so an ``apply`` running at the same time reaches it either way.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from prism_limiter import _tz, _validate
from prism_limiter._keys import ProjectKeys, global_policy_key, projects_key
from prism_limiter._log import logger
from prism_limiter._policy import Policy, decode_project, encode_project
from prism_limiter._protocol import Command, Op, Script, as_int, text
from prism_limiter._rules import ProjectRules
from prism_limiter.errors import InvalidRequest


class PolicyStore:
    """Compiled project policies, loaded on first use and dropped when a script says stale."""

    def __init__(
        self, namespace: str, audit_maxlen: int, keys: Callable[[str], ProjectKeys]
    ) -> None:
        self.namespace = namespace
        self.audit_maxlen = audit_maxlen
        self.keys = keys
        self._rules: dict[str, ProjectRules] = {}

    def forget(self, project: str) -> None:
        self._rules.pop(project, None)

    def apply(self, policy: Policy, actor: str) -> Op[int]:
        """Store ``policy`` under a new version for every listed and every known project."""
        if not isinstance(policy, Policy):
            raise InvalidRequest(
                f"apply_policy takes a Policy (Policy.from_toml or Policy.load), got"
                f" {type(policy).__name__}"
            )
        actor = _validate.text("actor", actor)
        ns = self.namespace
        doc = msgspec.json.encode(policy).decode()
        version = as_int((yield Script("bump_policy", [global_policy_key(ns)], [doc, actor])))
        if policy.projects:
            yield Command(("SADD", projects_key(ns), *policy.projects))
        known = yield Command(("SMEMBERS", projects_key(ns)))
        for project in sorted({text(p) for p in known}):
            yield from self._store_project(project, policy, version, actor)
        self._rules.clear()
        logger.info("prism.policy.applied", version=version, actor=actor)
        return version

    def _store_project(self, project: str, policy: Policy, version: int, actor: str) -> Op[None]:
        keys = self.keys(project)
        pp = policy.for_project(project)
        zones = _tz.for_zones({b.timezone for b in pp.budgets} if pp else set())
        args: list[str | int] = [
            project,
            self.audit_maxlen,
            version,
            encode_project(pp).decode() if pp else "",
            actor,
            len(zones),
        ]
        for zone, table in zones:
            args += [zone, table]
        yield Script("apply_policy", [keys.policy, keys.audit], args)

    def rules(self, project: str) -> Op[ProjectRules]:
        """The project's compiled policy, loaded on first use and after a stale reply."""
        cached = self._rules.get(project)
        if cached is not None:
            return cached
        keys = self.keys(project)
        version, doc = yield Command(("HMGET", keys.policy, "v", "doc"))
        if version is None:  # first request of a project the policy does not list
            ns = self.namespace
            yield Command(("SADD", projects_key(ns), project))
            gversion, gdoc = yield Command(("HMGET", global_policy_key(ns), "v", "doc"))
            if gversion is not None:
                policy = msgspec.json.decode(gdoc, type=Policy)
                yield from self._store_project(project, policy, as_int(gversion), "defaults")
                version, doc = yield Command(("HMGET", keys.policy, "v", "doc"))
        policy_doc = text(doc) if doc is not None else ""
        rules = ProjectRules(
            project,
            decode_project(policy_doc.encode()) if policy_doc else None,
            as_int(version) if version is not None else 0,
        )
        self._rules[project] = rules
        return rules
