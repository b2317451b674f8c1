"""rediss:// against a local TLS redis-server with a test certificate authority."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prism_limiter import Limiter, Policy
from prism_limiter.engine._devserver import free_port, redis_server_binary


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=prism-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    ca, cert, key = _certificates(tmp_path)
    binary = redis_server_binary()
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the TLS redis-server did not start (built without TLS?)")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_limiter_over_tls(tls_url: str) -> None:
    """The whole cycle runs over rediss://, the server's certificate checked against the CA."""
    lim = Limiter.from_url(tls_url)
    lim.apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='b'\nusd=1.0\n"
        )
    )
    r = lim.reserve("p", "gpt-4o", est_tokens=100)
    assert r.settle(input_tokens=100, output_tokens=10).first
    assert lim.status("p")[0].spent_usd > 0
    lim.close()


def test_a_wrong_ca_is_refused(tls_url: str, tmp_path: Path) -> None:
    """A certificate the client does not trust fails the connection, clearly and promptly."""
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = _certificates(other)
    url = tls_url.split("?", 1)[0] + f"?ssl_ca_certs={wrong_ca}"
    lim = Limiter.from_url(url, socket_timeout=1, retries=0)
    with pytest.raises(Exception, match=r"(?i)certificate|ssl|unavailable"):
        lim.reserve("p", "gpt-4o", est_tokens=1)
    lim.close()
