"""The fuzz properties, run long: every hypothesis property over input the watcher reads (config
files, HTTP answers, token answers, the CLI, module and job ids), at many more examples than CI.

    python bench/fuzz.py [--examples 5000] [--seed 1]

Runs pytest on the property tests with this module as a plugin, which raises every property's
example count (tests/test_fuzz.py reads FUZZ_EXAMPLES for its own). Prints pytest's summary and
the wall time, writes bench/results/fuzz.json, exits with pytest's exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "fuzz.json"
PROPERTIES = [
    "tests/test_fuzz.py",
    "tests/test_config.py::test_any_text_gives_a_config_or_a_config_error",
    "tests/test_config.py::test_any_mapping_shape_gives_a_config_or_a_config_error",
    "tests/test_config.py::test_any_jobs_file_gives_jobs_or_a_config_error",
    "tests/test_classify.py::test_any_answer_classifies_without_raising",
    "tests/test_security.py::test_any_ids_stay_in_their_place_or_are_refused",
    "tests/test_security.py::test_the_config_takes_only_plain_names_and_digits",
]


def pytest_configure(config: pytest.Config) -> None:
    """As a plugin: the long profile for properties that do not set their own example count."""
    examples = int(os.environ["FUZZ_EXAMPLES"])
    settings.register_profile(
        "bench", max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck)
    )
    settings.load_profile("bench")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fuzz properties long.")
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    environment = {**os.environ, "FUZZ_EXAMPLES": str(args.examples), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "bench.fuzz", "-p", "no:cacheprovider"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, f"--hypothesis-seed={args.seed}", *PROPERTIES],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    wall_s = round(time.monotonic() - started, 1)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    print(done.stdout if done.returncode else summary)
    print(f"{args.examples} examples per property, seed {args.seed}: {wall_s} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {"arguments": vars(args), "summary": summary, "wall_s": wall_s}
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
