"""A DNS server that never answers must not hold a stopped watcher: a lookup in a thread cannot
be cancelled, and the interpreter waits for it at exit (18 s here, longer in a cluster), past
`docker stop`'s grace, into a SIGKILL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs unshare -rnm (user namespaces) and ip")
@pytest.mark.parametrize(
    ("api_domain", "http"),
    [
        ("https://crm.unanswered.test", ""),  # Zoho's host, looked up for the first poll
        ("http://127.0.0.1:9", "http: {host: watcher.unanswered.test, port: 9464}\n"),  # at start
    ],
)
def test_a_stop_is_prompt_while_a_dns_lookup_hangs(
    tmp_path: Path, api_domain: str, http: str
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:10 attempts:2\n")
    config = tmp_path / "w.yaml"
    config.write_text(
        f"zoho:\n  api_domain: {api_domain}\n"
        "  auth:\n    access_token: ${ZOHO_ACCESS_TOKEN}\n"
        f"{http}jobs:\n  - {{module: Leads, job_id: '1'}}\n"
    )
    ran = subprocess.run(
        [
            "unshare",
            "-rnm",
            sys.executable,
            str(HERE / "dns_blackhole.py"),
            str(resolv_conf),
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE.parent,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["exit_code"] == 0
    assert result["exit_s"] < 5.0  # the README's promise, well inside docker stop's 10 s
    if http:  # stopped while starting: nothing was said to have started
        assert result["events"] == ["watcher.stopped"]
    else:
        assert result["events"][0] == "watcher.started"
