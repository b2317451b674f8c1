"""Tamper evidence: every entry's seq and chain, written by the scripts, checked by
``verify_audit``, which names the first edited, deleted, inserted or reordered entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from _helpers import audit

from prism_limiter import BudgetExceeded, Limiter, Policy
from prism_limiter.audit._chain import GENESIS, link, pairs_of

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o"]
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "daily"
usd = 0.001
period = "day"
warn_at = [0.5]
"""
)
KEY = "prism:{p}:audit"
Entries = list[tuple[bytes, list[tuple[bytes, bytes]]]]


def _history(limiter: Any, denials: int = 3) -> None:
    """A policy change, a warning, denials of several kinds, an override, a revoke."""
    limiter.apply_policy(POLICY)
    limiter.reserve("p", "gpt-4o", est_tokens=400).settle(input_tokens=400, output_tokens=0)
    for i in range(denials):  # distinct tags: one entry each
        with pytest.raises(BudgetExceeded):
            limiter.reserve("p", "gpt-4o", est_tokens=100, tags={"n": str(i)})
    limiter.grant_override(
        "p", "daily", usd=1, ttl_s=60, requested_by="ann", approved_by="cfo", reason="r"
    )
    limiter.revoke_override("p", "daily", actor="cfo", reason="done")


def _entries(client: Any) -> Entries:
    return [(i, pairs_of(f)) for i, f in client.xrange(KEY)]


def _rewrite(client: Any, change: Callable[[Entries], Entries]) -> None:
    """Rebuild the stream with ``change`` applied (ids kept where possible: stream entries
    cannot be edited in place, so this is what an edit with write access looks like)."""
    entries = change(_entries(client))
    client.delete(KEY)
    last = (0, 0)
    for entry_id, pairs in entries:
        ms, seq = (int(x) for x in entry_id.split(b"-"))
        if (ms, seq) <= last:
            ms, seq = last[0], last[1] + 1
        last = (ms, seq)
        client.xadd(KEY, dict(pairs), id=f"{ms}-{seq}")


def test_every_entry_is_chained_gaplessly(limiter: Any, rclient: Any) -> None:
    """seq runs 1..n in stream order, each chain is the hash of the previous one and the
    entry's fields (recomputed here), the head holds the last; policy entries included."""
    _history(limiter)
    entries = _entries(rclient)
    events = [dict(p)[b"event"] for _, p in entries]
    assert events[0] == b"policy.applied" and b"override.revoked" in events
    previous = GENESIS
    for n, (_, pairs) in enumerate(entries, start=1):
        fields = dict(pairs)
        assert fields[b"seq"] == str(n).encode() and fields[b"schema"] == b"1"
        assert pairs[-1][0] == b"chain"
        assert fields[b"chain"] == link(previous, pairs[:-1])
        previous = fields[b"chain"]
    head = rclient.hgetall("prism:{p}:audit:head")
    assert head[b"seq"] == str(len(entries)).encode() and head[b"chain"] == previous
    result = limiter.verify_audit("p")
    assert result.ok and result.checked == len(entries) and result.chained
    assert result.checkpoint is not None and result.checkpoint.seq == len(entries)


def _edit(entries: Entries) -> Entries:
    entry_id, pairs = entries[3]
    entries[3] = (entry_id, [(k, b"0.000000001" if k == b"amount_usd" else v) for k, v in pairs])
    return entries


def _insert(entries: Entries) -> Entries:
    return [*entries[:4], entries[3], *entries[4:]]  # a copy of entry 4 after it


def _reorder(entries: Entries) -> Entries:
    entries[3], entries[4] = (entries[3][0], entries[4][1]), (entries[4][0], entries[3][1])
    return entries


@pytest.mark.parametrize(
    ("change", "at", "words"),
    [
        (_edit, 3, "does not match its chain: edited"),
        (_insert, 4, "seq 5 was due: inserted"),
        (_reorder, 3, "seq 4 missing before"),  # 5 comes first: "deleted, or moved"
    ],
    ids=["edit", "insert", "reorder"],
)
def test_a_rewritten_entry_is_named(
    limiter: Any, rclient: Any, change: Callable[[Entries], Entries], at: int, words: str
) -> None:
    _history(limiter)
    _rewrite(rclient, change)
    result = limiter.verify_audit("p")
    assert not result.ok
    assert result.bad_id == _entries(rclient)[at][0].decode()
    assert words in (result.problem or "")
    assert result.checkpoint is not None and result.checkpoint.seq == at  # the last good one


def test_a_deleted_entry_is_named(limiter: Any, rclient: Any) -> None:
    _history(limiter)
    ids = [i for i, _ in _entries(rclient)]
    rclient.xdel(KEY, ids[2])
    result = limiter.verify_audit("p")
    assert not result.ok and result.bad_seq == 3 and result.bad_id == ids[3].decode()
    assert result.problem == (
        f"seq 3 missing before entry {ids[3].decode()} (seq 4): deleted, or moved (reordered)"
    )


def test_entries_deleted_at_the_end_are_found_by_the_head(limiter: Any, rclient: Any) -> None:
    _history(limiter)
    ids = [i for i, _ in _entries(rclient)]
    rclient.xdel(KEY, ids[-1], ids[-2])
    result = limiter.verify_audit("p")
    n = len(ids)
    assert not result.ok and result.bad_id is None and result.bad_seq == n - 1
    assert result.problem == f"seq {n - 1}..{n} missing at the end: deleted"


def test_verification_resumes_from_a_checkpoint_past_a_trimmed_prefix(
    limiter: Any, rclient: Any
) -> None:
    """A checkpoint names the last verified entry: verification resumes after it, so a prefix
    removed since (retention) does not matter, and its own entry must not have changed."""
    _history(limiter)
    first = limiter.verify_audit("p")
    assert first.ok and first.checkpoint is not None
    ids = [i for i, _ in _entries(rclient)]
    limiter.try_reserve("p", "gpt-4o", est_tokens=100, tags={"n": "later"})
    rclient.xtrim(KEY, minid=ids[4], approximate=False)  # the first four are gone
    resumed = limiter.verify_audit("p", checkpoint=first.checkpoint)
    assert resumed.ok and resumed.checked == 1  # only the entry written since
    assert not resumed.trimmed
    again = limiter.verify_audit("p", checkpoint=msgspec.to_builtins(resumed.checkpoint))
    assert again.ok and again.checked == 0
    fresh = limiter.verify_audit("p")  # without one: the first entry left anchors the chain
    assert fresh.ok and fresh.trimmed
    # The checkpoint's own entry rewritten with a recomputed chain (and all after it): the
    # checkpoint, kept elsewhere, does not match it any more.
    forged = b"f" * 40

    def recompute(entries: Entries) -> Entries:
        return [
            (i, [(k, forged if k == b"chain" and i == ids[-1] else v) for k, v in pairs])
            for i, pairs in entries
        ]

    _rewrite(rclient, recompute)
    stale = limiter.verify_audit("p", checkpoint=first.checkpoint)
    assert not stale.ok and stale.bad_id == ids[-1].decode()
    assert "no longer matches the checkpoint" in (stale.problem or "")


def test_a_lost_head_is_rebuilt_from_the_last_entry(limiter: Any, rclient: Any) -> None:
    """The head hash is only a cache of the last entry for the scripts: without it the next
    entry continues the chain (verification says the head is missing until then)."""
    _history(limiter)
    rclient.delete("prism:{p}:audit:head")
    missing = limiter.verify_audit("p")
    assert not missing.ok and "head" in (missing.problem or "")
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=100, tags={"n": "after"})
    assert limiter.verify_audit("p").ok


def test_streams_are_chained_each_on_its_own(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(
        Policy.from_toml('[projects.a]\nallow_models = []\n[projects.b]\nallow_models = ["x"]\n')
    )
    for project in ("a", "b", "a"):
        limiter.try_reserve(project, "gpt-4o", est_tokens=1, tags={"p": project})
    assert [e["seq"] for e in audit(rclient, "a")] == ["1", "2"]
    assert [e["seq"] for e in audit(rclient, "b")] == ["1", "2"]
    assert limiter.verify_audit("a").ok and limiter.verify_audit("b").ok


def test_memory_mode_has_no_sha1_and_says_so() -> None:
    """fakeredis has no redis.sha1hex: entries carry chain "unavailable"; seq still counts and
    is verified (``chained`` is False)."""
    lim = Limiter.from_url("memory://chain-test")
    lim.apply_policy(POLICY)
    for n in range(2):
        lim.try_reserve("p", "gpt-4o", est_tokens=10**6, tags={"n": str(n)})
    entries = [dict(p) for _, p in (_entries(lim.client))]
    assert {e[b"chain"] for e in entries} == {b"unavailable"}
    assert [e[b"seq"] for e in entries] == [b"1", b"2", b"3"]
    result = lim.verify_audit("p")
    assert result.ok and not result.chained and result.checked == 3
    lim.client.xdel(KEY, lim.client.xrange(KEY)[1][0])
    deleted = lim.verify_audit("p")
    assert not deleted.ok and deleted.bad_seq == 2
    lim.close()
