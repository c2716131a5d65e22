"""CI step: audit the locked dependencies with pip-audit; fail on a finding, never on an outage.

    python .ci/audit.py PIP-AUDIT-COMMAND...

The command is run with `-f json -o FILE` added. Its verdict:
- a known vulnerability in any dependency: exit 1, naming each;
- the vulnerability source could not be reached (no report, a connection error), or it knows
  nothing of the pinned versions (every dependency skipped as "not found"): a warning, exit 0 —
  CI must not go red because a third-party service is down;
- anything else (a report that cannot be read, an unexpected error): exit 1, so a broken step
  cannot pass silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

# What requests/urllib3 say when the service is unreachable, as they appear in the traceback.
UNREACHABLE = (
    "ConnectionError",
    "ProxyError",
    "NameResolutionError",
    "ConnectTimeout",
    "ReadTimeout",
    "SSLError",
    "Max retries exceeded",
)


def verdict(returncode: int, report: str | None, stderr: str) -> tuple[int, list[str]]:
    """(exit code, lines to print) for one pip-audit run."""
    if report is None:
        if returncode != 0 and any(sign in stderr for sign in UNREACHABLE):
            return 0, ["WARNING: pip-audit could not reach its vulnerability service; not audited"]
        return 1, ["pip-audit failed without a report:", *stderr.strip().splitlines()[-5:]]
    try:
        dependencies = json.loads(report)["dependencies"]
        found = [
            f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {vuln['fix_versions']})"
            for dep in dependencies
            for vuln in dep.get("vulns", ())
        ]
    except (ValueError, KeyError, TypeError):
        return 1, ["pip-audit wrote a report this step cannot read"]
    if found:
        return 1, [f"VULNERABLE: {line}" for line in found]
    skipped = [dep["name"] for dep in dependencies if "skip_reason" in dep]
    audited = len(dependencies) - len(skipped)
    lines = [f"pip-audit: {audited} dependencies audited, no known vulnerability"]
    if skipped:
        lines.append(
            f"WARNING: {len(skipped)} not audited (unknown to the vulnerability service):"
            f" {', '.join(skipped)}"
        )
    return 0, lines


def main(command: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "audit.json"
        done = subprocess.run(
            [*command, "-f", "json", "-o", str(output)],
            capture_output=True,
            text=True,
            check=False,
        )
        report = output.read_text() if output.exists() else None
    code, lines = verdict(done.returncode, report, done.stderr)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
