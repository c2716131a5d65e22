"""Noticing config edits: by content, once settled, and none lost while the watcher starts."""

from __future__ import annotations

from pathlib import Path

import yaml

from watcher.config import load_all
from watcher.reload import ConfigWatcher

ENV = {"ZOHO_ACCESS_TOKEN": "reload-test-token"}


def write(path: Path, job_ids: list[str]) -> None:
    document = {
        "zoho": {"auth": {"access_token": "${ZOHO_ACCESS_TOKEN}"}},
        "jobs": [{"module": "Leads", "job_id": job_id} for job_id in job_ids],
    }
    path.write_text(yaml.safe_dump(document))


def test_an_edit_made_between_loading_and_watching_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    running = load_all(path, ENV)
    write(path, ["1", "2"])  # while the watcher was starting: before it first looked
    follower = ConfigWatcher(path, running, ENV)
    changed = follower.check()
    assert changed is not None
    assert [spec.job_id for spec in changed.jobs] == ["1", "2"]
    assert follower.check() is None  # and once only


def test_files_that_read_as_the_running_config_are_no_change(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    assert follower.check() is None
    path.write_text(path.read_text() + "# a comment changes the bytes, not the config\n")
    assert follower.check() is None
    assert follower.check(report_now=True) is not None  # SIGHUP: the user asked, so say it


def test_an_edit_after_a_check_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    assert follower.check() is None
    write(path, ["2"])
    changed = follower.check()
    assert changed is not None
    assert [spec.job_id for spec in changed.jobs] == ["2"]
