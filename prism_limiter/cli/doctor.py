"""``doctor``: is this Redis fit to keep the spend guarantee? One line per check."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import redis
from rich.text import Text

from prism_limiter.cli._checks import (
    Check,
    clock,
    cluster,
    info,
    memory,
    persistence,
    policy,
    replication,
    scripts,
    version,
)
from prism_limiter.cli._common import FINDING, OK, command, json_flag, out, write_json
from prism_limiter.engine._backend import _plain, check_url

HELP = """\
check the Redis at --url: version, maxmemory-policy, persistence (AOF and its fsync policy),
replication role, cluster mode, whether the scripts load, the clock skew between this host and
the server, and whether a policy is stored. Each line says what it means for the spend
guarantee. Exit 1 on a finding."""

_MARK = {"ok": ("ok", "green"), "note": ("note", "yellow"), "finding": ("FINDING", "red")}


def register(sub: Any) -> None:
    p = command(sub, "doctor", run, "can this Redis keep the spend guarantee?", description=HELP)
    json_flag(p, "the checks")


def checks(client: Any, url: str, namespace: str) -> list[Check]:
    server = info(client, "server")  # the first call: BackendUnavailable when unreachable
    return [
        version(server),
        memory(client, info(client, "memory")),
        persistence(client, info(client, "persistence")),
        replication(info(client, "replication")),
        cluster(info(client, "cluster"), url),
        scripts(client),
        clock(client),
        policy(client, namespace),
    ]


def run(args: argparse.Namespace) -> int:
    scheme = check_url(args.url, asyncio=False)  # InvalidRequest: exit 2
    if scheme == "memory":
        found = [
            Check(
                "backend",
                "note",
                "memory:// (embedded)",
                "state lives in this process only: nothing to check",
            )
        ]
    else:
        client = redis.Redis.from_url(_plain(args.url), socket_timeout=2, socket_connect_timeout=2)
        try:
            found = checks(client, args.url, args.namespace)
        finally:
            client.close()
    findings = sum(c.status == "finding" for c in found)
    if args.json:
        write_json({"checks": [asdict(c) for c in found], "findings": findings})
    else:
        console = out()
        width = max(len(c.check) for c in found)
        for c in found:
            label, style = _MARK[c.status]
            line = Text(f"{label:<8}", style=style)
            line.append(f"{c.check:<{width}}  {c.found}: {c.meaning}")
            console.print(line)
        console.print(f"{findings} finding(s)" if findings else "no findings")
    return FINDING if findings else OK
