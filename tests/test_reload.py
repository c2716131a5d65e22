"""Noticing config edits: by content, once settled, and none lost while the watcher starts."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher import reload
from watcher.config import Config, ConfigError, load_all, read_file_bytes
from watcher.reload import ConfigWatcher

ENV = {"ZOHO_ACCESS_TOKEN": "reload-test-token"}


def write(path: Path, job_ids: list[str], **top: object) -> None:
    document = {
        "zoho": {"auth": {"access_token": "${ZOHO_ACCESS_TOKEN}"}},
        "jobs": [{"module": "Leads", "job_id": job_id} for job_id in job_ids],
        **top,
    }
    path.write_text(yaml.safe_dump(document))


def test_an_edit_made_between_loading_and_watching_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    running = load_all(path, ENV)
    write(path, ["1", "2"])  # while the watcher was starting: before it first looked
    follower = ConfigWatcher(path, running, ENV)
    assert follower.check() is None  # seen; taken once it has stayed so for one more check
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
    assert follower.check() is None
    changed = follower.check()
    assert changed is not None
    assert [spec.job_id for spec in changed.jobs] == ["2"]


def test_unchanged_files_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are compared with what the running config was read from, so ten thousand jobs
    are not parsed again every few seconds just to find nothing changed."""
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "more.yaml").write_text("jobs:\n  - {module: Deals, job_id: '2'}\n")
    path = tmp_path / "watcher.yaml"
    write(path, ["1"], jobs_dir=str(jobs_dir))
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)

    def must_not_load(*_: object) -> Config:
        raise AssertionError("loaded unchanged files")

    monkeypatch.setattr(reload, "load_all", must_not_load)
    assert follower.check() is None
    monkeypatch.undo()
    (jobs_dir / "more.yaml").write_text("jobs:\n  - {module: Deals, job_id: '3'}\n")
    assert follower.check() is None
    changed = follower.check()
    assert changed is not None
    assert [spec.job_id for spec in changed.jobs] == ["1", "3"]


def test_a_file_caught_half_written_removes_no_job(tmp_path: Path) -> None:
    """An editor's save can leave a file empty, or cut after a line, for a moment: valid YAML
    with fewer jobs. Taken at once, it would remove jobs and add them back a check later."""
    path = tmp_path / "watcher.yaml"
    jobs = "".join(f"  - {{module: Leads, job_id: '{n}'}}\n" for n in (10, 11, 12))
    full = "zoho: {auth: {access_token: '${ZOHO_ACCESS_TOKEN}'}}\njobs:\n" + jobs
    path.write_text(full)
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    for moment in ("", full[: full.index("'11'")] + "'1'}\n"):  # empty; cut inside an id
        path.write_text(moment)
        assert follower.check() is None
        path.write_text(full)
        assert follower.check() is None
    assert follower.check() is None


def test_a_change_that_never_settles_is_taken_after_a_few_checks(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    seen = []
    for n in range(2, 2 + reload.SETTLE_CHECKS_MAX + 1):
        write(path, ["1", str(n)])  # a tool that adds a job before every check
        seen.append(follower.check())
    assert seen[:-1] == [None] * reload.SETTLE_CHECKS_MAX
    taken = seen[-1]
    assert taken is not None
    assert [spec.job_id for spec in taken.jobs] == ["1", str(1 + len(seen))]


def test_a_broken_edit_is_reported_once_and_its_fix_seen_in_a_new_jobs_dir(
    tmp_path: Path,
) -> None:
    """The fix is in a directory the running config never named: only reading the files again
    can see it."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    jobs_dir = tmp_path / "jobs.d"
    write(path, ["1"], jobs_dir=str(jobs_dir))  # named before it is made
    assert follower.check() is None
    with pytest.raises(ConfigError, match="directory not found"):
        follower.check()
    assert [follower.check() for _ in range(4)] == [None] * 4  # said once
    jobs_dir.mkdir()
    (jobs_dir / "more.yaml").write_text("jobs:\n  - {module: Deals, job_id: '2'}\n")
    found = [follower.check() for _ in range(3)]  # read; its new files settle; taken
    assert found[:2] == [None, None]
    fixed = found[2]
    assert fixed is not None
    assert [spec.job_id for spec in fixed.jobs] == ["1", "2"]


def test_undoing_a_broken_edit_is_said_although_the_config_is_as_before(tmp_path: Path) -> None:
    """The last word must not stay `config.invalid`: the fix is taken, if only to say so."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    good = path.read_text()
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    path.write_text("jobs: [\n")
    assert follower.check() is None
    with pytest.raises(ConfigError):
        follower.check()
    path.write_text(good)  # the edit undone: the same config as the one running
    assert follower.check() is None
    healed = follower.check()
    assert healed is not None
    assert [spec.job_id for spec in healed.jobs] == ["1"]
    assert follower.check() is None  # and once only


def test_what_is_read_must_be_what_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is cut again between the look that saw it settled and the read."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    write(path, ["1", "2", "3"])
    assert follower.check() is None

    def cut_then_load(*args: object) -> Config:
        write(path, [])  # an editor's save, caught at its worst
        return load_all(path, ENV)

    monkeypatch.setattr(reload, "load_all", cut_then_load)
    assert follower.check() is None
    monkeypatch.undo()
    write(path, ["1", "2", "3"])
    assert follower.check() is None
    taken = follower.check()
    assert taken is not None
    assert [spec.job_id for spec in taken.jobs] == ["1", "2", "3"]


def test_a_file_cut_again_while_read_is_not_reported_until_it_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cp` over the file (truncate, then write) just as a settled change is read: the half
    written is no error, unless it stays so."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    write(path, ["1", "2", "3"])
    assert follower.check() is None
    full = path.read_text()

    def cut_then_load(*args: object) -> Config:
        path.write_text(full[: len(full) // 2] + '\n  "')
        return load_all(path, ENV)

    monkeypatch.setattr(reload, "load_all", cut_then_load)
    assert follower.check() is None
    monkeypatch.undo()
    with pytest.raises(ConfigError):  # seen cut at the next check too: settled so
        follower.check()


def test_a_change_taken_as_it_stands_is_not_reported_broken_at_first_sight(
    tmp_path: Path,
) -> None:
    """A tool that rewrites its jobs file again and again: after a few checks the change is
    taken as it stands, but a moment caught half-written is not reported as broken until it
    stays so for a check."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    for n in range(2, 2 + reload.SETTLE_CHECKS_MAX):
        write(path, ["1", str(n)])
        assert follower.check() is None
    path.write_text(path.read_text()[:-5] + '\n  "')  # caught mid-write
    assert follower.check() is None
    with pytest.raises(ConfigError):
        follower.check()


def test_a_broken_file_in_a_newly_named_jobs_dir_must_settle_before_it_is_reported(
    tmp_path: Path,
) -> None:
    """The look that saw the edit listed the old directory: the new one's files have not been
    seen to settle yet (one may be half written)."""
    path = tmp_path / "watcher.yaml"
    old, new = tmp_path / "d1", tmp_path / "d2"
    old.mkdir()
    new.mkdir()
    write(path, ["1"], jobs_dir=str(old))
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    (new / "a.yaml").write_text('jobs:\n  - {module: Leads, job_id: "')
    write(path, ["1"], jobs_dir=str(new))
    assert follower.check() is None  # the edit, seen
    assert follower.check() is None  # settled, but d2 only just listed
    with pytest.raises(ConfigError, match=r"a\.yaml"):
        follower.check()


def test_a_sighup_reports_a_broken_edit_at_once(tmp_path: Path) -> None:
    """The user asked: no settling."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    path.write_text(path.read_text() + "  - {module: Leads\n")
    with pytest.raises(ConfigError):
        follower.check(report_now=True)


def test_a_sighup_starts_the_settling_afresh(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    for n in range(2, 2 + reload.SETTLE_CHECKS_MAX):  # a change that keeps moving
        write(path, ["1", str(n)])
        assert follower.check() is None
    assert follower.check(report_now=True) is not None
    write(path, [])  # caught half-written right after: not taken at first sight
    assert follower.check() is None


def test_a_file_is_read_again_only_when_stat_says_it_may_have_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten thousand job files read at every check cost 2.4 % of a core, idle."""
    path = tmp_path / "watcher.yaml"
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    write(path, [], jobs_dir=str(jobs_dir))
    for n in range(1, 4):
        (jobs_dir / f"{n}.yaml").write_text(f"jobs:\n  - {{module: Leads, job_id: '{n}'}}\n")
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    reads = counted_reads(monkeypatch)
    monkeypatch.setattr(reload, "RACY_NS", 0)  # no file here was changed within a clock tick
    monkeypatch.setattr(reload, "READ_ALL_EVERY", 10**12)  # see the next test
    assert follower.check() is None
    assert len(reads) == 4  # first look: every file
    assert [follower.check() for _ in range(3)] == [None] * 3
    assert len(reads) == 4  # unchanged: none read again
    (jobs_dir / "2.yaml").write_text("jobs:\n  - {module: Leads, job_id: '5'}\n")
    assert follower.check() is None  # seen changed, settling
    assert reads[4:] == [str(jobs_dir / "2.yaml")]
    taken = follower.check()
    assert taken is not None
    assert [spec.job_id for spec in taken.jobs] == ["1", "5", "3"]


def test_a_file_changed_within_a_clock_tick_of_its_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two same-size edits a millisecond apart leave the same size and times: the second is
    seen because the first was too recent to trust."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    reads = counted_reads(monkeypatch)
    monkeypatch.setattr(reload, "READ_ALL_EVERY", 10**12)  # not the share every file has its turn
    for _ in range(3):
        assert follower.check() is None
    assert len(reads) == 3  # written just now: not trusted yet
    monkeypatch.setattr(reload, "RACY_NS", 0)
    for _ in range(5):
        assert follower.check() is None
    assert len(reads) == 4  # once more (the last read was too soon to vouch), then trusted


def test_checks_come_less_often_than_reload_interval_only_where_they_cost_too_much() -> None:
    """Tens of thousands of job files are a stat each per check: the checks then keep to their
    share of a core rather than to reload_interval."""
    assert reload.check_gap(5.0, 0.001) == 5.0
    assert reload.check_gap(5.0, 0.035) == pytest.approx(0.035 / reload.CHECKS_CPU_SHARE)
    assert reload.check_gap(5.0, 0.035) > 5.0


def test_the_cost_of_checks_is_averaged_so_one_costly_check_holds_none_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that loads a change costs many times the usual: counted alone, it would hold the
    next check back for a minute; a run of them (a file that stays broken) counts fully."""
    monkeypatch.setattr(reload, "RACY_NS", 0)  # no file here was changed within a clock tick
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)

    def slow_load(*args: Any) -> Config:
        started = time.thread_time()
        while time.thread_time() - started < 0.05:  # a load of ten thousand jobs
            pass
        return load_all(*args)

    monkeypatch.setattr(reload, "load_all", slow_load)
    follower.check()
    follower.check()
    usual = follower.cpu_s
    write(path, ["1", "2"])
    follower.check()  # seen changed
    assert follower.check() is not None  # loaded: 50 ms
    assert usual < follower.cpu_s < usual + 0.05 * reload.CHECK_COST_WEIGHT + 0.005
    for n in range(3, 30):  # a change at every other check: a load every other check
        write(path, ["1", str(n)])
        follower.check()
        follower.check()
    assert follower.cpu_s > 0.02  # about half of the loads' 50 ms


def test_the_first_check_sets_the_cost_the_gap_is_kept_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From nothing, the average would take minutes to reach what a check of ten thousand files
    costs, and the checks of those minutes would take more than their share of a core."""
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    look = ConfigWatcher._fingerprint

    def slow_look(self: ConfigWatcher) -> bytes:
        started = time.thread_time()
        while time.thread_time() - started < 0.03:  # a stat of ten thousand files
            pass
        return look(self)

    monkeypatch.setattr(ConfigWatcher, "_fingerprint", slow_look)
    follower.check()
    assert follower.cpu_s >= 0.03


def test_an_edit_that_puts_the_old_modification_time_back_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cp -p`, `touch -d`, rsync --times: same size, same mtime; the change time still moves."""
    monkeypatch.setattr(reload, "RACY_NS", 0)  # no file here was changed within a clock tick
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    assert [follower.check(), follower.check()] == [None, None]  # read once, then trusted
    before = path.stat()
    write(path, ["2"])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert follower.check() is None  # seen changed, settling
    taken = follower.check()
    assert taken is not None
    assert [spec.job_id for spec in taken.jobs] == ["2"]


def test_every_file_is_read_once_every_so_many_checks_a_share_at_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a file system whose clock is too coarse for stat to see every edit; a share at each
    check, so that no one check costs all of it."""
    monkeypatch.setattr(reload, "RACY_NS", 0)  # no file here was changed within a clock tick
    path = tmp_path / "watcher.yaml"
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    write(path, [], jobs_dir=str(jobs_dir))
    for n in range(60):
        (jobs_dir / f"{n}.yaml").write_text(f"jobs:\n  - {{module: Leads, job_id: '{n}'}}\n")
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    follower.check()  # the first look reads every file
    reads = counted_reads(monkeypatch)
    per_check = []
    for _ in range(reload.READ_ALL_EVERY):
        before = len(reads)
        assert follower.check() is None
        per_check.append(len(reads) - before)
    assert sorted(reads) == sorted([str(path), *(str(f) for f in jobs_dir.iterdir())])
    assert max(per_check) <= 20  # a share (about 5 of 61), never all at once


def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files reload reads from now on, in order."""
    reads: list[str] = []

    def counted(file: str) -> bytes:
        reads.append(file)
        return read_file_bytes(file)

    monkeypatch.setattr(reload, "read_file_bytes", counted)
    return reads


def test_a_first_look_at_start_up_leaves_the_first_check_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "RACY_NS", 0)  # no file here was changed within a clock tick
    monkeypatch.setattr(reload, "READ_ALL_EVERY", 10**12)  # not the share every file has its turn
    path = tmp_path / "watcher.yaml"
    write(path, ["1"])
    follower = ConfigWatcher(path, load_all(path, ENV), ENV)
    follower.look()
    reads = counted_reads(monkeypatch)
    assert follower.check() is None
    assert reads == []
    write(path, ["1", "2"])  # an edit made since the config was loaded is still one
    assert follower.check() is None
    assert follower.check() is not None
