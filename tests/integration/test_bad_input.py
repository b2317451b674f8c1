"""Bad input raises InvalidRequest and leaves the Redis keyspace exactly as it was."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import redis
from _helpers import keyspace

from prism_limiter import InvalidRequest, Limiter, Policy, TokenUsage
from prism_limiter.engine._protocol import Request, Script

pytestmark = pytest.mark.usefixtures("rclient")

BAD_RESERVES: list[dict[str, Any]] = [
    {"est_tokens": -1},
    {"est_tokens": float("nan")},
    {"est_tokens": 1.5},
    {"est_tokens": True},
    {"est_tokens": 10**12},
    {"max_output_tokens": -5},
    {"project": ""},
    {"project": "x" * 65},
    {"project": "sea\nrch"},
    {"project": "a}b"},
    {"model": ""},
    {"model": "gpt 4o"},
    {"model": "gpt-4o\r\n"},
    {"tags": {"team": "a\nb"}},
    {"tags": {"": "x"}},
    {"tags": {"team": ""}},
    {"tags": {"team": 5}},
    {"tags": {f"k{i}": "v" for i in range(17)}},
    {"tags": {"team": "x" * 257}},
    {"tags": {"team": "\ud800"}},
    {"tags": {"feature": "chat", "customer": "acme\udfff"}},
    {"tags": ["team"]},
    {"ttl_s": 0},
    {"ttl_s": -1},
    {"ttl_s": float("inf")},
    {"reservation_id": "has space"},
    {"reservation_id": ""},
]


@pytest.mark.parametrize("bad", BAD_RESERVES, ids=lambda b: repr(b)[:40])
def test_bad_reserve_changes_nothing(
    limiter: Any, policy: Policy, rclient: Any, bad: dict[str, Any]
) -> None:
    """Each malformed argument is refused before any write."""
    limiter.apply_policy(policy)
    before = keyspace(rclient)
    args: dict[str, Any] = {"project": "search", "model": "gpt-4o-mini", "est_tokens": 10}
    args.update(bad)
    project, model = args.pop("project"), args.pop("model")
    with pytest.raises(InvalidRequest):
        limiter.reserve(project, model, **args)
    assert keyspace(rclient) == before


@pytest.mark.parametrize(
    "counts",
    [
        {"input_tokens": -1, "output_tokens": 0},
        {"input_tokens": 10, "output_tokens": 0, "cache_read_tokens": 11},
        {"input_tokens": 10},
        {"input_tokens": 1.0, "output_tokens": 1},
    ],
)
def test_bad_settle_changes_nothing(
    limiter: Any, policy: Policy, rclient: Any, counts: dict[str, Any]
) -> None:
    """A settle with impossible counts is refused; the hold stays as it was."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=10)
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest):
        r.settle(**counts)
    assert keyspace(rclient) == before
    r.release()


def test_tag_values_that_look_like_keys_stay_inside_their_project(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """Tag values such as org:42 or a}{b are legitimate, escaped, and create no new key."""
    limiter.apply_policy(policy)
    for value in ["org:42", "a}{b", "{search}", "x|s", "prism:{other}:budgets", "a=b&c"]:
        limiter.reserve(
            "search", "gpt-4o-mini", est_tokens=1, tags={"feature": "chat", "customer": value}
        ).settle(input_tokens=1, output_tokens=1)
    keys = {k.decode() for k in rclient.keys("*")}
    assert all(
        k.startswith("prism:{search}:") or k in ("prism:policy", "prism:projects") for k in keys
    )
    split = {s.split_value for s in limiter.status("search") if s.budget == "per-customer"}
    assert split == {"org:42", "a}{b", "{search}", "x|s", "prism:{other}:budgets", "a=b&c"}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"input_tokens": -10_000_000, "output_tokens": 0}, "input_tokens"),
        ({"input_tokens": 1000.5, "output_tokens": 0}, "input_tokens"),
        ({"input_tokens": 10, "output_tokens": True}, "output_tokens"),
        ({"input_tokens": 10, "output_tokens": 100_000_001}, "output_tokens"),
        ({"input_tokens": 10, "output_tokens": 0, "cache_read_tokens": 11}, "cache_read_tokens"),
    ],
    ids=repr,
)
def test_bad_token_usage_is_refused_before_it_reaches_redis(
    limiter: Any, policy: Policy, rclient: Any, fields: dict[str, Any], named: str
) -> None:
    """A TokenUsage is checked when built, so a negative or fractional count books nothing."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=10)
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match=named):
        r.settle(TokenUsage(**fields))
    assert keyspace(rclient) == before
    r.release()


def test_int_subclasses_are_booked_as_plain_ints(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """An IntEnum count is a real int: it reaches the scripts as digits, not as its repr."""
    import enum

    class N(enum.IntEnum):
        TEN = 10

    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=N.TEN, max_output_tokens=N.TEN)
    r.settle(input_tokens=N.TEN, output_tokens=N.TEN)
    report = limiter.usage("search")
    assert (report.total.input_tokens, report.total.output_tokens) == (10, 10)


DEFAULTS_POLICY = """
[defaults]
allow_models = ["*"]

[[defaults.budgets]]
id = "per-customer"
usd = 1.0
period = "day"
split_by = "customer"
"""

LONE_SURROGATE = "a\ud800b"


def test_a_lone_surrogate_tag_changes_nothing_under_defaults(limiter: Any, rclient: Any) -> None:
    """A tag that cannot be encoded as UTF-8 is refused before the project registers itself."""
    limiter.apply_policy(Policy.from_toml(DEFAULTS_POLICY))
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match="UTF-8"):
        limiter.reserve("unlisted", "gpt-4o-mini", est_tokens=10, tags={"customer": LONE_SURROGATE})
    assert keyspace(rclient) == before


@pytest.mark.parametrize("project", ["search", "unlisted"])
@pytest.mark.parametrize(
    "bad",
    [
        {"approved_by": LONE_SURROGATE},
        {"requested_by": LONE_SURROGATE},
        {"approved_by": "Ann ", "requested_by": "ann"},  # one person twice
        {"reason": LONE_SURROGATE},
        {"split_value": LONE_SURROGATE},
        {"split_value": "a\nb"},
        {"split_value": ""},
        {"split_value": 42},
    ],
    ids=repr,
)
def test_bad_override_text_changes_nothing(
    limiter: Any, policy: Policy, rclient: Any, project: str, bad: dict[str, Any]
) -> None:
    """Both names, reason and split value are checked before any I/O, for a listed project and
    for one that [defaults] covers (whose first read would register it)."""
    defaults = Policy.from_toml(DEFAULTS_POLICY).defaults
    limiter.apply_policy(Policy(projects=policy.projects, defaults=defaults))
    before = keyspace(rclient)
    args: dict[str, Any] = {
        "requested_by": "ann",
        "approved_by": "cfo",
        "reason": "launch",
        "split_value": "acme",
    }
    args.update(bad)
    with pytest.raises(InvalidRequest):
        limiter.grant_override(project, "per-customer", usd=1, ttl_s=60, **args)
    revoke = {"actor": args["approved_by"], "reason": args["reason"]}
    if "requested_by" not in bad:
        with pytest.raises(InvalidRequest):
            limiter.revoke_override(
                project, "per-customer", split_value=args["split_value"], **revoke
            )
    assert keyspace(rclient) == before


def test_a_lone_surrogate_actor_of_apply_policy_changes_nothing(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    limiter.apply_policy(policy)
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match="UTF-8"):
        limiter.apply_policy(policy, actor=LONE_SURROGATE)
    assert keyspace(rclient) == before


@pytest.mark.parametrize(
    ("counts", "unknown"),
    [
        ({"input_tokens": 10, "output_tokens": 5, "cached_tokens": 5}, "cached_tokens"),
        ({"input_tokens": 10, "ouput_tokens": 5}, "ouput_tokens"),
        ({"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": None}, "reasoning_tokens"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("face", ["reservation", "limiter"])
def test_an_unknown_count_is_named(
    limiter: Any, policy: Policy, rclient: Any, counts: dict[str, Any], unknown: str, face: str
) -> None:
    """A misspelt or unsupported count raises InvalidRequest naming it and the accepted ones."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=10)
    before = keyspace(rclient)
    settle = r.settle if face == "reservation" else partial(limiter.settle, "search", r.id)
    with pytest.raises(InvalidRequest, match=rf"{unknown}.*input_tokens.*cache_write_1h_tokens"):
        settle(**counts)
    assert keyspace(rclient) == before
    r.release()


@pytest.mark.parametrize("project", ["search", "unlisted"])
def test_an_unknown_provider_changes_nothing(
    limiter: Any, policy: Policy, rclient: Any, project: str
) -> None:
    """reserve(provider=...) is checked against genai-prices' providers before any I/O."""
    defaults = Policy.from_toml(DEFAULTS_POLICY).defaults
    limiter.apply_policy(Policy(projects=policy.projects, defaults=defaults))
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match=r"unknown provider 'nope'.*'openai'"):
        limiter.reserve(project, "gpt-4o-mini", est_tokens=10, provider="nope")
    assert keyspace(rclient) == before


@pytest.mark.parametrize("not_a_policy", [{"projects": {}}, "[projects.p]\n", None], ids=repr)
def test_apply_policy_takes_a_policy(
    limiter: Any, policy: Policy, rclient: Any, not_a_policy: object
) -> None:
    """A dict or TOML text handed to apply_policy is refused before the version is bumped."""
    limiter.apply_policy(policy)
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match=r"Policy\.from_toml"):
        limiter.apply_policy(not_a_policy)
    assert keyspace(rclient) == before


class _Recording(Limiter):
    """Keeps the last script call of each name, to send it again with one argument changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: dict[str, Script] = {}

    def _io(self, request: Request) -> Any:
        if isinstance(request, Script):
            self.sent[request.name] = request
        return super()._io(request)

    def raw(self, name: str, changes: dict[int, str]) -> list[Any]:
        """The recorded ``name`` call again, ARGV[i] (1-based) replaced for each change."""
        sent = self.sent[name]
        args = [str(a) for a in sent.args]
        for i, value in changes.items():
            args[i - 1] = value
        reply: list[Any] = self._scripts(name, sent.keys, args)
        return reply


SPLIT_POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "per-customer"
usd = 1
split_by = "customer"
[[projects.p.rate_limits]]
id = "slots"
max_concurrent = 10
split_by = "customer"
"""


@pytest.mark.parametrize(
    ("name", "argv", "value"),
    [
        ("reserve", 11, "gpt-4o\x1fmini"),  # model
        ("reserve", 12, '{"customer":"a\x1fb"}'),  # tags
        ("reserve", 13, "total\x1fmodel=x"),  # attribution rows
        ("reserve", 18, "per-customer=a\x1fb"),  # budget instance ids
        ("reserve", 20, "r:slots=a\x1fb"),  # rate-limit instance ids
        ("settle", 13, "gpt-4o\x1fmini"),  # an unknown id's model
        ("settle", 14, '{"customer":"a\x1fb"}'),
        ("settle", 15, "total\x1fmodel=x"),
        ("settle", 17, "per-customer=a\x1fb"),
    ],
    ids=repr,
)
def test_a_separator_inside_a_stored_argument_is_refused(
    redis_url: str, rclient: Any, name: str, argv: int, value: str
) -> None:
    """The hold record joins its fields with \\x1f: a script argument that would be stored in
    it holding one would shift every field after it, and the record, unreadable, could never
    be settled or released (its hold held for good). The scripts refuse it; nothing changes."""
    lim = _Recording(redis.Redis.from_url(redis_url))
    lim.apply_policy(Policy.from_toml(SPLIT_POLICY))
    tags = {"customer": "acme"}
    lim.reserve("p", "gpt-4o-mini", est_tokens=10, tags=tags).settle(
        input_tokens=1, output_tokens=1
    )
    lim.settle("p", "never-reserved", input_tokens=1, output_tokens=1, model="gpt-4o", tags=tags)
    before = keyspace(rclient)
    rid = 7 if name == "reserve" else 6
    reply = lim.raw(name, {rid: "fresh-id", argv: value})
    assert reply[0] == b"badargs"
    assert keyspace(rclient) == before
    lim.close()


@pytest.mark.parametrize(
    ("name", "argv", "value"),
    [
        ("reserve", 3, "0"),  # usage TTL: EXPIRE 0 would delete the day's attribution
        ("reserve", 3, "-5"),
        ("reserve", 4, "-1"),  # record retention
        ("reserve", 5, "0"),  # sweep batch: ZRANGE ... LIMIT 0 -1 has no bound at all
        ("reserve", 5, "-1"),
        ("settle", 3, "0"),
        ("release", 5, "-1"),
    ],
    ids=repr,
)
def test_a_head_out_of_range_is_refused(
    redis_url: str, rclient: Any, name: str, argv: int, value: str
) -> None:
    """The common head's numbers must be in range, not only integers: the scripts refuse a
    usage TTL, record retention or sweep batch that would delete or scan everything."""
    lim = _Recording(redis.Redis.from_url(redis_url))
    lim.apply_policy(Policy.from_toml(SPLIT_POLICY))
    tags = {"customer": "acme"}
    lim.reserve("p", "gpt-4o-mini", est_tokens=10, tags=tags).release()
    lim.reserve("p", "gpt-4o-mini", est_tokens=10, tags=tags).settle(
        input_tokens=1, output_tokens=1
    )
    before = keyspace(rclient)
    rid = 7 if name == "reserve" else 6
    reply = lim.raw(name, {rid: "fresh-id", argv: value})
    assert reply[0] == b"badargs"
    assert keyspace(rclient) == before
    lim.close()
