"""The watcher's YAML configuration: loaded once, validated completely, every problem with its line.

`load` reads the files (through `files`: bounded reads, fingerprints for reloads), `sections` knows
the shape of the file, `reader` the rules of each value, `yaml_tree` the node tree they walk, and
`model` what a valid configuration holds.
"""

from watcher.config.files import (
    Fingerprint,
    file_digest,
    jobs_file_names,
    read_file_bytes,
)
from watcher.config.load import (
    load_all,
    load_config,
    load_jobs_file,
    load_state_path,
    parse_config,
    parse_jobs_file,
)
from watcher.config.model import (
    MASKED_LENGTH,
    PROBLEMS_SHOWN,
    AuthSettings,
    Config,
    ConfigError,
    HttpSettings,
    JobSpec,
    PollingSettings,
    Secret,
    redact,
)
from watcher.config.reader import is_loopback, url_problem

__all__ = [
    "MASKED_LENGTH",
    "PROBLEMS_SHOWN",
    "AuthSettings",
    "Config",
    "ConfigError",
    "Fingerprint",
    "HttpSettings",
    "JobSpec",
    "PollingSettings",
    "Secret",
    "file_digest",
    "is_loopback",
    "jobs_file_names",
    "load_all",
    "load_config",
    "load_jobs_file",
    "load_state_path",
    "parse_config",
    "parse_jobs_file",
    "read_file_bytes",
    "redact",
    "url_problem",
]
