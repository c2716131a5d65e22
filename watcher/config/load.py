"""Loading the config file and the jobs files of its jobs_dir into one `Config`, or one
`ConfigError` naming every problem with its file and line."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from yaml.nodes import SequenceNode

from watcher import collector
from watcher.config.files import Fingerprint, jobs_files, named, read_file
from watcher.config.model import MASKED_LENGTH, PROBLEMS_SHOWN, Config, ConfigError, JobSpec, redact
from watcher.config.reader import Reader, optional
from watcher.config.sections import config_of, jobs_of
from watcher.config.yaml_tree import SEQ_TAG, compose, value_of


def load_config(
    path: Path, env: Mapping[str, str] | None = None, seen: Fingerprint | None = None
) -> Config:
    """Reads and validates `path`; anything wrong, the file itself included, is a ConfigError.

    Only the main file: load_all also reads the jobs files in jobs_dir.
    """
    text = read_file(path, "config file", seen)
    config = parse_config(text, named(path), os.environ if env is None else env)
    return replace(config, source=path)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    """Validates YAML `text`, naming it `source` in messages and expanding ${VAR} from `env`."""
    # Resumed only once the node tree is gone with its reader: alive then, all of it would be
    # walked by a collection that finds nothing to free.
    with collector.paused():
        config = _read_config(text, source, env)
    _refuse_secrets_in(config.jobs, config.zoho.auth.secrets(), source)
    return config


def _read_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    reader = Reader(source, env)
    config = config_of(reader, compose(text, source))
    if config is None or reader.problems:
        raise reader.error()
    return config


def load_state_path(path: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Only `state_path`: all that `status` reads. An admin's shell often has neither the
    credentials the rest names (`${VAR}`s, secret files) nor, mid-edit, jobs files that read
    well, and needs neither to look at what the watcher remembers."""
    source = named(path)
    reader = Reader(source, os.environ if env is None else env)
    root = compose(read_file(path, "config file", None), source)
    node = value_of(root, "state_path")
    state_path = None if node is None else optional(reader.local_path)(node, "state_path")
    if reader.problems:
        raise reader.error()
    return state_path


def load_all(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """The main file plus every jobs file in its jobs_dir: the complete set of jobs to watch.

    Jobs files are read in name order and their jobs appended after the main file's, so the order
    of jobs (and of their first polls) does not depend on the directory listing. The problems of
    every jobs file are reported together, each naming its file.
    """
    seen = Fingerprint()
    config = load_config(path, env, seen)
    if config.jobs_dir is None:
        return replace(config, fingerprint=seen.digest())
    jobs = list(config.jobs)
    problems: list[str] = []
    found = 0
    for jobs_file in jobs_files(config.jobs_dir):
        try:
            jobs.extend(load_jobs_file(jobs_file, seen))
        except ConfigError as error:
            problems.extend(error.shown)
            found += error.found
    if problems:
        # A token pasted into a jobs file by mistake must not be echoed back either.
        shown = redact(problems[:PROBLEMS_SHOWN], config.zoho.auth.secrets())
        source = named(config.jobs_dir)
        raise ConfigError(shown, more=found - len(shown), source=source, jobs_dir=config.jobs_dir)
    # The main file's were checked as it was parsed.
    _refuse_secrets_in(jobs[len(config.jobs) :], config.zoho.auth.secrets(), str(config.jobs_dir))
    return replace(config, jobs=tuple(dict.fromkeys(jobs)), fingerprint=seen.digest())


def load_jobs_file(path: Path, seen: Fingerprint | None = None) -> tuple[JobSpec, ...]:
    """The jobs of one file dropped in jobs_dir; anything wrong with it is a ConfigError."""
    return parse_jobs_file(read_file(path, "jobs file", seen), named(path))


def parse_jobs_file(text: str, source: str) -> tuple[JobSpec, ...]:
    """Validates a jobs file: a mapping with only a `jobs:` list, items as in the main file.

    Values are read literally: a jobs file is written by a tool, not templated from the
    environment, and a module or job id can never contain a `$` anyway.
    """
    with collector.paused():  # resumed with the node tree gone, as in `parse_config`
        return _read_jobs_file(text, source)


def _read_jobs_file(text: str, source: str) -> tuple[JobSpec, ...]:
    reader = Reader(source, None)
    sections = reader.mapping(compose(text, source), "", ("jobs",)) or {}
    jobs = jobs_of(reader, sections.get("jobs", SequenceNode(SEQ_TAG, [])))
    if reader.problems:
        raise reader.error()
    return jobs


def _refuse_secrets_in(jobs: Sequence[JobSpec], secrets: Sequence[str], source: str) -> None:
    """A credential pasted as a module or job id would go to Zoho in a URL and be shown by
    `/jobs` and `status`, which mask nothing: refused, without saying which job (or it)."""
    maskable = [secret for secret in secrets if len(secret) >= MASKED_LENGTH]
    if not maskable:
        return
    modules = {job.module for job in jobs}  # a handful, however many jobs
    numeric = [secret for secret in maskable if secret.isdigit()]  # ids are digits
    if any(secret in module for module in modules for secret in maskable) or any(
        secret in job.job_id for job in jobs for secret in numeric
    ):
        raise ConfigError(
            (
                f"{source}: jobs: a module or job id holds one of the configured secrets;"
                " pasted in the wrong place?",
            )
        )
