"""Policy in Redis: storing a new version for the projects it changes, and the cache.

The global hash ``<ns>:policy`` holds the whole effective document and its version. ``apply``
merges a document into it (the projects it names and its ``[defaults]`` replace theirs; with
``prune`` the document replaces everything), stores the result under the next version with a
check-and-set (concurrent applies by different teams serialize, none is lost), then writes the
part of every project the change touched, "if newer", into the project's own hash tag.

A project the document does not list is planned from ``[defaults]`` read-only; only when one of
its reserves is about to be accepted does it register (at most ``max_projects`` in the set) and
store its copy, so a rejected call writes nothing. It registers before it reads the global
document again, so an ``apply`` running at the same time reaches it either way.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from prism_limiter.engine import _validate
from prism_limiter.engine._keys import ProjectKeys, global_policy_key, projects_key
from prism_limiter.engine._log import logger
from prism_limiter.engine._protocol import Command, Op, Script, as_int, text
from prism_limiter.errors import InvalidRequest, PolicyError
from prism_limiter.policy import _tz
from prism_limiter.policy._policy import Policy, decode_project, encode_project
from prism_limiter.policy._rules import ProjectRules

_MAX_CAS_RETRIES = 10


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True):
    """What an ``apply_policy`` / ``remove_policy`` stored: the new version, the projects whose
    stored policy it wrote (registered ones only), and those it removed from the document."""

    version: int
    projects: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def _encoded(part: object) -> bytes:
    return msgspec.json.encode(part)


class _ProjectNames(msgspec.Struct):
    """The project names of a stored document, decoded without their policies."""

    projects: dict[str, msgspec.Raw] = {}


class PolicyStore:
    """Compiled project policies, loaded on first use and dropped when a script says stale."""

    def __init__(
        self,
        namespace: str,
        audit_retention_ms: int,
        keys: Callable[[str], ProjectKeys],
        max_projects: int = 10_000,
    ) -> None:
        self.namespace = namespace
        self.audit_retention_ms = audit_retention_ms
        self.keys = keys
        self.max_projects = max_projects
        self._rules: dict[str, ProjectRules] = {}
        self._global: tuple[int, Policy] | None = None  # the last global document decoded

    def cached(self, project: str) -> ProjectRules | None:
        """The project's compiled policy if this worker has it (no I/O)."""
        return self._rules.get(project)

    def forget(self, project: str) -> None:
        self._rules.pop(project, None)

    def apply(self, policy: Policy, actor: str, *, prune: bool = False) -> Op[PolicyChange]:
        """Merge ``policy`` into the stored document (or replace it: ``prune``) and store every
        project whose part changed under the new version."""
        actor = _validate.text("actor", actor)

        def merge(current: Policy) -> Policy:
            if prune:
                return policy
            defaults = policy.defaults if policy.defaults is not None else current.defaults
            return Policy(projects={**current.projects, **policy.projects}, defaults=defaults)

        return (yield from self._change(merge, actor, named=set(policy.projects)))

    def remove(self, project: str, actor: str) -> Op[PolicyChange]:
        """Drop one project from the document: it falls back to ``[defaults]`` or no policy."""
        _validate.name("project", project)
        actor = _validate.text("actor", actor)

        def without(current: Policy) -> Policy:
            projects = {k: v for k, v in current.projects.items() if k != project}
            return Policy(projects=projects, defaults=current.defaults)

        return (yield from self._change(without, actor, named=set()))

    def _change(
        self, edit: Callable[[Policy], Policy], actor: str, named: set[str]
    ) -> Op[PolicyChange]:
        ns = self.namespace
        for _ in range(_MAX_CAS_RETRIES):
            version, doc = yield Command(("HMGET", global_policy_key(ns), "v", "doc"))
            current = msgspec.json.decode(doc, type=Policy) if doc else Policy()
            new = edit(current)
            args: list[str | int] = [msgspec.json.encode(new).decode(), actor, as_int(version or 0)]
            reply = yield Script("bump_policy", [global_policy_key(ns)], args)
            if text(reply[0]) == "bumped":
                break
        else:
            raise PolicyError("the stored policy kept changing; apply again")
        new_version = as_int(reply[1])
        removed = sorted(set(current.projects) - set(new.projects))
        if new.projects:
            yield Command(("SADD", projects_key(ns), *sorted(new.projects)), writes=True)
        known = {text(p) for p in (yield Command(("SMEMBERS", projects_key(ns))))}
        touched = named | set(removed)
        if _encoded(current.defaults) != _encoded(new.defaults):
            touched |= {p for p in known if p not in new.projects}
        for project in sorted(touched & known):
            event = "policy.removed" if project in removed else "policy.applied"
            yield from self._store_project(project, new, new_version, actor, event)
        self._rules.clear()
        self._global = None
        logger.info(
            "prism.policy.applied", version=new_version, actor=actor, removed=removed or None
        )
        return PolicyChange(
            version=new_version, projects=tuple(sorted(touched & known)), removed=tuple(removed)
        )

    def _store_project(
        self,
        project: str,
        policy: Policy,
        version: int,
        actor: str,
        event: str = "policy.applied",
    ) -> Op[None]:
        keys = self.keys(project)
        pp = policy.for_project(project)
        zones = _tz.for_zones({b.timezone for b in pp.budgets} if pp else set())
        args: list[str | int] = [
            project,
            self.audit_retention_ms,
            version,
            encode_project(pp).decode() if pp else "",
            actor,
            len(zones),
        ]
        for zone, table in zones:
            args += [zone, table]
        args.append(event)
        yield Script("apply_policy", [keys.policy, keys.audit, keys.audit_head], args)

    def projects(self) -> Op[list[str]]:
        """The projects the stored document lists plus those registered in ``<ns>:projects``
        (projects ``[defaults]`` covers, once they were used), sorted."""
        ns = self.namespace
        doc = yield Command(("HGET", global_policy_key(ns), "doc"))
        named = set(msgspec.json.decode(doc, type=_ProjectNames).projects) if doc else set()
        members = yield Command(("SMEMBERS", projects_key(ns)))
        return sorted(named | {text(m) for m in members})

    def rules(self, project: str) -> Op[ProjectRules]:
        """The project's compiled policy, loaded on first use and after a stale reply.

        For a project without a stored copy the rules come from the global document and are not
        cached (``unregistered`` is set): a later ``apply`` must reach its next request.
        """
        cached = self._rules.get(project)
        if cached is not None:
            return cached
        keys = self.keys(project)
        version, doc = yield Command(("HMGET", keys.policy, "v", "doc"))
        if version is not None:
            policy_doc = text(doc) if doc is not None else ""
            rules = ProjectRules(
                project,
                decode_project(policy_doc.encode()) if policy_doc else None,
                as_int(version),
            )
            self._rules[project] = rules
            return rules
        policy = yield from self._global_policy()
        covered = policy.for_project(project) if policy is not None else None
        return ProjectRules(project, covered, 0, unregistered=covered is not None)

    def _global_policy(self) -> Op[Policy | None]:
        """The whole stored document, decoded once per global version."""
        key = global_policy_key(self.namespace)
        version = yield Command(("HGET", key, "v"))
        if version is None:
            return None
        if self._global is None or self._global[0] != as_int(version):
            gversion, doc = yield Command(("HMGET", key, "v", "doc"))
            if gversion is None:
                return None
            self._global = (as_int(gversion), msgspec.json.decode(doc, type=Policy))
        return self._global[1]

    def register(self, project: str) -> Op[None]:
        """Give a project covered by ``[defaults]`` its own stored copy (before its first
        accepted reserve). Refused past ``max_projects`` registered projects."""
        ns = self.namespace
        member = yield Command(("SISMEMBER", projects_key(ns), project))
        if not as_int(member):
            count = yield Command(("SCARD", projects_key(ns)))
            if as_int(count) >= self.max_projects:
                raise InvalidRequest(
                    f"project {project!r} is not listed in the policy, and [defaults] already"
                    f" covers {self.max_projects:,} registered projects (max_projects); list it"
                    " in the policy or raise max_projects"
                )
            yield Command(("SADD", projects_key(ns), project), writes=True)
        self._global = None  # read the document again: it may have changed meanwhile
        policy = yield from self._global_policy()
        gversion = self._global[0] if self._global is not None else 0
        if policy is not None:
            yield from self._store_project(project, policy, gversion, "defaults")
        self.forget(project)
