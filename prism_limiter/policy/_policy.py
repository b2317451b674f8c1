"""The policy: TOML in, frozen records out; each mistake a ``PolicyError`` naming its key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from prism_limiter.engine import _validate
from prism_limiter.engine._money import MAX_USD
from prism_limiter.errors import InvalidRequest, PolicyError
from prism_limiter.pricing._names import key_forms
from prism_limiter.pricing._pricing import provider_problem

Period = Literal["day", "week", "month", "quarter", "year", "total"]
# "shadow": the limit never denies; a request it would deny is audited (budget.would_block,
# rate.would_limit) and goes ahead. For rolling a limit out safely.
Mode = Literal["enforce", "shadow"]
_GLOB = re.compile(r"[A-Za-z0-9_.:/@*?\-\[\]!]{1,128}\Z")


def check_globs(field: str, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        try:
            check_glob(pattern)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None


def check_glob(pattern: str) -> None:
    """Globs are fnmatch patterns over model names; every ``[`` must close, no stray ``]``."""
    if not isinstance(pattern, str) or not _GLOB.match(pattern):
        raise ValueError(f"malformed model glob {pattern!r}")
    i = 0
    while i < len(pattern):
        if pattern[i] == "]":
            raise ValueError(f"malformed model glob {pattern!r}: ']' without '['")
        if pattern[i] == "[":
            j = i + 1
            if pattern[j : j + 1] == "!":
                j += 1
            if pattern[j : j + 1] == "]":  # a literal ']' first in the class
                j += 1
            end = pattern.find("]", j)
            if end < 0:
                raise ValueError(f"malformed model glob {pattern!r}: unclosed '['")
            i = end
        i += 1


def _check_name(kind: str, value: str) -> None:
    try:
        _validate.name(kind, value)
    except InvalidRequest as exc:
        raise ValueError(str(exc)) from None


def _check_where(where: dict[str, str]) -> None:
    for key, value in where.items():
        _check_name("where key", key)
        try:
            _validate.tag_value(key, value)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None


class _FieldError(ValueError):
    """A ``__post_init__`` error about one field: the error path names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PriceOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A negotiated price in USD per million tokens; it replaces genai-prices for that model."""

    input_mtok: float
    output_mtok: float
    cache_read_mtok: float | None = None
    cache_write_mtok: float | None = None
    cache_write_1h_mtok: float | None = None

    def __post_init__(self) -> None:
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if value is not None and not 0 <= value <= 1_000_000:
                raise ValueError(f"{field} must be between 0 and 1e6 USD per MTok, got {value}")

    def as_classes(self) -> dict[str, float]:
        out = {"input": self.input_mtok, "output": self.output_mtok}
        for cls in ("cache_read", "cache_write", "cache_write_1h"):
            value = getattr(self, f"{cls}_mtok")
            if value is not None:
                out[cls] = value
        return out


class BudgetPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A cap on spend per calendar period, for the requests it matches."""

    id: str
    usd: float
    mode: Mode = "enforce"
    period: Period = "month"
    timezone: str = "UTC"
    week_start: Literal["monday", "sunday"] = "monday"
    warn_at: tuple[float, ...] = (0.8,)
    on_expiry: Literal["charge", "release"] = "charge"
    split_by: str | None = None
    where: dict[str, str] = {}
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name("budget id", self.id)
        if not 0 <= self.usd <= MAX_USD:
            raise ValueError(f"budget {self.id!r}: usd must be between 0 and {MAX_USD:,}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"budget {self.id!r}: timezone {self.timezone!r} is not an IANA zone"
            ) from None
        for fraction in self.warn_at:
            if not 0 < fraction <= 1:
                raise ValueError(f"budget {self.id!r}: warn_at must be in (0, 1], got {fraction}")
        if len(set(self.warn_at)) != len(self.warn_at) or len(self.warn_at) > 8:
            raise ValueError(f"budget {self.id!r}: warn_at must be distinct, at most 8")
        if self.split_by is not None:
            _check_name(f"budget {self.id!r}: split_by", self.split_by)
        _check_where(self.where)
        check_globs(f"budget {self.id!r}: models", self.models)


class RateLimitPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Requests per minute, tokens per minute and concurrent holds, for the requests it matches.

    ``burst`` is the bucket size in minutes of rate (default 1: a full minute's worth may go at
    once, then the rate refills it continuously); ``0.1`` allows six seconds' worth.
    """

    id: str
    mode: Mode = "enforce"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    burst: float = 1.0
    where: dict[str, str] = {}
    split_by: str | None = None

    def __post_init__(self) -> None:
        _check_name("rate limit id", self.id)
        for field in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, field)
            if value is not None and not 1 <= value <= 1_000_000_000:
                raise ValueError(f"{field} must be between 1 and 1e9, got {value}")
        if self.rpm is None and self.tpm is None and self.max_concurrent is None:
            raise ValueError("a rate limit needs at least one of rpm, tpm, max_concurrent")
        if not 0.001 <= self.burst <= 60:
            raise ValueError(
                f"rate limit {self.id!r}: burst must be between 0.001 and 60 minutes of rate"
            )
        if self.split_by is not None:
            _check_name(f"rate limit {self.id!r}: split_by", self.split_by)
        _check_where(self.where)
        check_globs(f"rate limit {self.id!r}: models", self.models)


class ProjectPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything that applies to one project's requests."""

    allow_models: tuple[str, ...] = ()
    deny_models: tuple[str, ...] = ()
    default_max_output_tokens: int = 1024
    # Input tokens a call may write to the prompt cache, for holds (None: any of them).
    default_max_cache_write_tokens: int | None = None
    on_unknown_price: Literal["deny", "allow"] = "deny"
    hold_ttl_s: float = 600.0
    provider: str | None = None
    prices: dict[str, PriceOverride] = {}
    budgets: tuple[BudgetPolicy, ...] = ()
    rate_limits: tuple[RateLimitPolicy, ...] = ()

    def __post_init__(self) -> None:
        check_globs("allow_models", self.allow_models)
        check_globs("deny_models", self.deny_models)
        if not 0 <= self.default_max_output_tokens <= _validate.MAX_TOKENS:
            raise ValueError("default_max_output_tokens must be between 0 and 100,000,000")
        writes = self.default_max_cache_write_tokens
        if writes is not None and not 0 <= writes <= _validate.MAX_TOKENS:
            raise ValueError("default_max_cache_write_tokens must be between 0 and 100,000,000")
        if not 1 <= self.hold_ttl_s <= _validate.MAX_TTL_S:
            raise ValueError(f"hold_ttl_s must be between 1 and {_validate.MAX_TTL_S}")
        if self.provider is not None:
            problem = provider_problem(self.provider)
            if problem is not None:
                raise _FieldError("provider", problem)
        seen: dict[str, str] = {}
        for model in self.prices:
            try:
                _validate.model(model)
            except InvalidRequest as exc:
                raise ValueError(str(exc)) from None
            for form in key_forms(model):
                other = seen.setdefault(form, model)
                if other != model:
                    raise ValueError(
                        f"prices {other!r} and {model!r} name the same model (names match in"
                        " any case, a provider prefix by its id or alias): keep one"
                    )
        for kind, items in (("budget", self.budgets), ("rate limit", self.rate_limits)):
            ids = [item.id for item in items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id {dupes[0]!r}")


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole policy document: one section per project and optional ``[defaults]``.

    ``[defaults]`` applies to projects the document does not list; without it an unlisted
    project is denied with reason ``no-policy``.
    """

    projects: dict[str, ProjectPolicy] = {}
    defaults: ProjectPolicy | None = None

    def __post_init__(self) -> None:
        for project in self.projects:
            _check_name("project", project)

    @classmethod
    def from_toml(cls, text: str | bytes) -> Policy:
        """Parse and validate a TOML policy.

        Raises:
            PolicyError: malformed TOML, or an unknown or invalid key (the message names it).
        """
        if not isinstance(text, str | bytes):
            raise PolicyError(f"a policy is TOML text (str or bytes), got {type(text).__name__}")
        try:
            raw = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"malformed policy TOML: {exc}") from None
        except RecursionError:
            raise PolicyError("malformed policy TOML: tables or arrays nested too deep") from None
        unknown = sorted(set(raw) - {"projects", "defaults"})
        if unknown:
            raise PolicyError(f"invalid policy: unknown top-level key {unknown[0]!r}")
        sections = raw.get("projects", {})
        if not isinstance(sections, dict):
            raise PolicyError("invalid policy: 'projects' must be a table of project tables")
        projects = {name: _convert(body, f"projects.{name}") for name, body in sections.items()}
        defaults = _convert(raw["defaults"], "defaults") if "defaults" in raw else None
        try:
            return cls(projects=projects, defaults=defaults)
        except ValueError as exc:
            raise PolicyError(f"invalid policy: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and validate a TOML policy file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
        return cls.from_toml(data)

    def for_project(self, project: str) -> ProjectPolicy | None:
        return self.projects.get(project, self.defaults)


def _convert(body: object, where: str) -> ProjectPolicy:
    """One project table as a record; the error names the full key path (``projects.x.y``)."""
    try:
        return msgspec.convert(body, ProjectPolicy)
    except RecursionError:
        raise PolicyError(f"invalid policy: `{where}` is nested too deep") from None
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$", f"`{where}")
        if " - at `" not in message:
            message += f" - at `{where}`"
        if isinstance(exc.__cause__, _FieldError):
            message = f"{message[:-1]}.{exc.__cause__.field}`"
        raise PolicyError(f"invalid policy: {_with_choices(message)}") from None


def _choices() -> dict[str, tuple[str, ...]]:
    """The valid values of every enum (``Literal``) field of a project table, by field name."""
    out: dict[str, tuple[str, ...]] = {}
    for struct in (ProjectPolicy, BudgetPolicy, RateLimitPolicy, PriceOverride):
        for fld in msgspec.structs.fields(struct):
            args = get_args(fld.type)
            if get_origin(fld.type) is Literal:
                assert out.setdefault(fld.name, args) == args, fld.name  # names stay unambiguous
    return out


_CHOICES = _choices()


def _with_choices(message: str) -> str:
    """msgspec says "Invalid enum value 'x'" without the valid ones: add them."""
    path = message.rpartition(" - at `")[2].rstrip("`")
    choices = _CHOICES.get(path.rpartition(".")[2])
    if choices is None or not message.startswith(("Invalid enum value", "Expected `str`")):
        return message
    head, sep, tail = message.partition(" - at `")
    return f"{head} (one of {', '.join(map(repr, choices))}){sep}{tail}"


_PROJECT_DECODER = msgspec.json.Decoder(ProjectPolicy)
_ENCODER = msgspec.json.Encoder()


def encode_project(policy: ProjectPolicy) -> bytes:
    return _ENCODER.encode(policy)


def decode_project(data: bytes) -> ProjectPolicy:
    return _PROJECT_DECODER.decode(data)
