"""The shape of the config file: which keys each section takes, how each is read, and the
rules that join settings (modes of credentials, data centres that must agree, bounds in order)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.config.model import (
    AuthSettings,
    Config,
    HttpSettings,
    JobSpec,
    PollingSettings,
    ZohoSettings,
)
from watcher.config.reader import DIGITS, MODULE_NAME, Reader, optional
from watcher.config.yaml_tree import SEQ_TAG, empty_mapping, is_null, kind_of, value_of
from watcher.durations import format_duration
from watcher.zoho_api import CENTRE_OF_ACCOUNTS, CENTRE_OF_API, DATA_CENTERS, DEFAULT_DATA_CENTER

_SECRETS = ("access_token", "refresh_token", "client_id", "client_secret")
_TRIO = ("refresh_token", "client_id", "client_secret")
_REFRESH_BACKOFF = ("refresh_backoff_initial", "refresh_backoff_max")
_AUTH_KEYS = (*_SECRETS, *(f"{name}_file" for name in _SECRETS), "accounts_url", *_REFRESH_BACKOFF)
_ZOHO_KEYS = ("data_center", "api_domain", "api_version", "auth")
_POLLING_ORDERED = (("interval", "max_interval"), ("backoff_initial", "backoff_max"))
_JOB_KEYS = ("module", "job_id")
_NO_CREDENTIALS = (
    "give access_token, or refresh_token + client_id + client_secret"
    " (each may instead be read from a file with NAME_file)"
)


def config_of(reader: Reader, root: Node) -> Config | None:
    """The config the document's root says; None when a problem left nothing to build it from
    (`reader` holds the problems, and any of them rejects the file)."""
    readers: dict[str, Callable[[Node, str], object]] = {
        "reload_interval": reader.duration,
        "jobs_dir": optional(reader.directory),
        "state_path": optional(reader.local_path),
        "retention": reader.duration,
        "progress_events": reader.boolean,
    }
    sections = reader.mapping(root, "", ("zoho", "polling", "jobs", *readers, "http"))
    if sections is None:
        return None
    zoho = _zoho(reader, sections.get("zoho", empty_mapping(root)))
    polling = _polling(reader, sections.get("polling", empty_mapping(root)))
    jobs = jobs_of(reader, sections.get("jobs", SequenceNode(SEQ_TAG, [])))
    http = _http(reader, sections.get("http", empty_mapping(root)))
    service = reader.values(sections, "", readers)
    return None if zoho is None else Config(zoho, polling, jobs, http=http, **service)


def _zoho(reader: Reader, node: Node) -> ZohoSettings | None:
    settings = reader.mapping(node, "zoho", _ZOHO_KEYS)
    if settings is None:
        return None
    data_center = reader.field(settings, "zoho", "data_center", reader.data_center)
    api_domain = reader.field(settings, "zoho", "api_domain", reader.url)
    api_version = reader.field(settings, "zoho", "api_version", reader.api_version)
    # Zoho's API of one data centre says where its tokens come from, when nothing else does.
    centre = data_center or CENTRE_OF_API.get((api_domain or "").lower())
    auth_node = settings.get("auth", empty_mapping(node))
    auth = _auth(reader, auth_node, centre)
    if auth is None:
        return None
    if (problem := _centres_problem(api_domain, data_center, auth.accounts_url)) is not None:
        key, message = problem
        if key == "api_domain":
            reader.report(settings.get(key, node), "zoho.api_domain", message)
        else:
            reader.report(value_of(auth_node, key) or node, "zoho.auth.accounts_url", message)
        return None
    if api_domain is None and (data_center or not auth.refreshes):
        api_domain = DATA_CENTERS[data_center or DEFAULT_DATA_CENTER][1]
    return ZohoSettings(api_domain, api_version or "v2", data_center, auth)


def _centres_problem(
    api_domain: str | None, data_center: str | None, accounts_url: str | None
) -> tuple[str, str] | None:
    """The key to blame and why, if the API (given, or the data centre's) and the accounts server
    are Zoho's of two data centres: tokens are issued per data centre, and every one sent to
    another would be refused. (Either not Zoho's own, a proxy or a simulator, is not compared; no
    accounts server is a fixed token from anywhere.)"""
    api = api_domain or (DATA_CENTERS[data_center][1] if data_center else "")
    api_centre = CENTRE_OF_API.get(api.lower())
    tokens_centre = CENTRE_OF_ACCOUNTS.get((accounts_url or "").lower())
    if api_centre is None or tokens_centre is None or api_centre == tokens_centre:
        return None
    if api_domain is None or api_centre == data_center:  # the odd one out is accounts_url
        return "accounts_url", (
            f"{accounts_url} is the accounts server of Zoho's {tokens_centre!r} data centre, but"
            f" data_center is {data_center!r}; remove accounts_url (data_center picks it) or make"
            " them agree"
        )
    return "api_domain", (
        f"{api_domain} is the API of Zoho's {api_centre!r} data centre, but tokens come from its"
        f" {tokens_centre!r} data centre; remove api_domain (the data centre then picks the API)"
        " or make them agree"
    )


def _auth(reader: Reader, node: Node, data_center: str | None) -> AuthSettings | None:
    path = "zoho.auth"
    settings = reader.mapping(node, path, _AUTH_KEYS)
    if settings is None:
        return None
    secrets: dict[str, Any] = {name: reader.secret(settings, path, name) for name in _SECRETS}
    accounts_url = reader.field(settings, path, "accounts_url", reader.url)
    backoff = reader.values(settings, path, dict.fromkeys(_REFRESH_BACKOFF, reader.duration))
    given = {name for name in _SECRETS if name in settings or f"{name}_file" in settings}
    mode_problem = _mode_problem(given)
    if mode_problem:
        reader.report(node, path, mode_problem)
        return None
    refreshes = "access_token" not in given
    if accounts_url is None and (data_center or refreshes):
        accounts_url = DATA_CENTERS[data_center or DEFAULT_DATA_CENTER][0]
    auth = AuthSettings(**secrets, accounts_url=accounts_url, **backoff)
    _check_order(reader, node, path, settings, backoff, auth, (_REFRESH_BACKOFF,))
    return auth


def _mode_problem(given: set[str]) -> str | None:
    """Why the credentials given fit neither fixed-token nor refresh mode, if they don't."""
    trio = given.intersection(_TRIO)
    if "access_token" in given and trio:
        return "give either access_token or refresh_token + client_id + client_secret, not both"
    if not given:
        return f"no credentials: {_NO_CREDENTIALS}"
    missing = [name for name in _TRIO if name not in trio]
    if "access_token" not in given and missing:
        return f"refresh mode also needs {' and '.join(missing)}"
    return None


def _polling(reader: Reader, node: Node) -> PollingSettings:
    readers: dict[str, Callable[[Node, str], object]] = {
        "interval": reader.duration,
        "max_interval": reader.duration,
        "rate_limit": reader.count,
        "rate_period": reader.duration,
        "max_concurrency": reader.concurrency,
        "backoff_initial": reader.duration,
        "backoff_max": reader.duration,
        "request_timeout": reader.duration,
        "not_found_attempts": reader.count,
        "schedule": reader.schedule,
        "credits_per_day": optional(reader.count),
        "credits_floor": reader.whole,  # 0 turns the low-credits warning off
    }
    settings = reader.mapping(node, "polling", tuple(readers))
    if settings is None:
        return PollingSettings()
    values = reader.values(settings, "polling", readers)
    polling = PollingSettings(**values)
    _check_order(reader, node, "polling", settings, values, polling, _POLLING_ORDERED)
    return polling


def _http(reader: Reader, node: Node) -> HttpSettings:
    readers = {"host": optional(reader.host), "port": optional(reader.port)}
    settings = reader.mapping(node, "http", tuple(readers))
    if settings is None:
        return HttpSettings()
    return HttpSettings(**reader.values(settings, "http", readers))


def _check_order(
    reader: Reader,
    node: Node,
    path: str,
    settings: Mapping[str, Node],
    values: Mapping[str, object],
    result: object,
    pairs: Iterable[tuple[str, str]],
) -> None:
    """Reports each (low, high) pair of durations in `result` whose high is below its low."""
    for low, high in pairs:
        # A bound that was given but invalid fell back to its default: comparing it would mislead.
        if any(name in settings and name not in values for name in (low, high)):
            continue
        low_value, high_value = getattr(result, low), getattr(result, high)
        if high_value < low_value:
            where = settings.get(high) or settings.get(low) or node
            reader.report(
                where,
                f"{path}.{high}",
                f"{format_duration(high_value)} is less than {path}.{low}"
                f" ({format_duration(low_value)})",
            )


def jobs_of(reader: Reader, node: Node) -> tuple[JobSpec, ...]:
    """The jobs of a `jobs:` list, each once, in the order first written."""
    if is_null(node):
        return ()
    if not isinstance(node, SequenceNode):
        reader.report(node, "jobs", f"expected a list of jobs, got {kind_of(node)}")
        return ()
    specs = (
        _usual_job(item) or _job(reader, item, f"jobs[{index}]")
        for index, item in enumerate(node.value)
    )
    return tuple(dict.fromkeys(spec for spec in specs if spec is not None))


def _usual_job(node: Node) -> JobSpec | None:
    """The job of an item written the usual way, or None to leave the item to `_job`.

    The usual way, which nearly every item of a 10,000-job file follows, is exactly the keys
    module and job_id (either order) with single values that are valid as written. `_job` would
    read such an item to the same JobSpec without a problem, only at several times the cost; it
    still reads every other item, so whatever is wrong is reported as it always was. A value
    that matches its pattern holds no `$`, so ${VAR} expansion could not have changed it.
    """
    if not isinstance(node, MappingNode) or len(node.value) != len(_JOB_KEYS):
        return None
    first, second = node.value
    if first[0].value == "job_id":
        first, second = second, first
    (module_key, module), (job_id_key, job_id) = first, second
    usual = (
        module_key.value == "module"
        and job_id_key.value == "job_id"
        and isinstance(module, ScalarNode)
        and isinstance(job_id, ScalarNode)
        and MODULE_NAME.fullmatch(module.value)
        and DIGITS.fullmatch(job_id.value)
    )
    return JobSpec(module.value, job_id.value) if usual else None


def _job(reader: Reader, node: Node, path: str) -> JobSpec | None:
    settings = reader.mapping(node, path, _JOB_KEYS)
    if settings is None:
        return None
    missing = [name for name in _JOB_KEYS if name not in settings]
    if missing:
        reader.report(node, path, f"missing {' and '.join(missing)}")
    module = reader.field(settings, path, "module", reader.module)
    job_id = reader.field(settings, path, "job_id", reader.job_id)
    return None if module is None or job_id is None else JobSpec(module, job_id)
