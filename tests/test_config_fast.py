"""The loader's shortcuts for big files change its speed and nothing else.

Two shortcuts in watcher/config/: usual job items skip the general walk (`_usual_job`), and the
composer tags scalars only null or not (`_NullResolver`). Each property compares what the loader
gives with the shortcut against what it gives without, on input that lands on both sides of the
shortcut's conditions: YAML 1.1 traps, ${VAR}s, odd keys, tags, anchors, collections.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.config import ConfigError, JobSpec, parse_config, parse_jobs_file, sections, yaml_tree
from watcher.config.reader import Reader

ENV = {"TOKEN": "1000.fast-path-token", "MODULE": "Leads", "ID": "12", "ODD": "1 2"}
AUTH = "zoho:\n  auth:\n    access_token: ${TOKEN}\n"
# Where the two paths could part: valid as written or not, null, ${VAR}, quoted, tagged, anchored.
VALUES = st.sampled_from(
    [
        *("Leads", "Deals_2", "'Leads'", "1", "0123", '"554023000000000000"', "1_000", "0x1F"),
        *("", "~", "null", "no", "true", "1e3", "Le ads", "_x", "9Leads", "١٢٣", "Leads\\t"),
        *("${MODULE}", "${ID}", "${ODD}", "${NOPE}", "$$", "'${ID}'", "!!str 9", "!!null ''"),
        *("&a 5", "[1]", "{module: Leads}", "|\n      7\n"),
    ]
)
KEYS = st.sampled_from(["module", "job_id", "'job_id'", "jobid", "Module", "[module]", "~", "<<"])
# Mostly one change away from a usual item, so that each of the shortcut's conditions is tried.
NEAR_USUAL = st.tuples(
    st.tuples(st.just("module") | KEYS, st.just("Leads") | VALUES),
    st.tuples(st.just("job_id") | KEYS, st.just("12") | VALUES),
).flatmap(st.permutations)
FIELDS = NEAR_USUAL | st.lists(st.tuples(KEYS, VALUES), max_size=3)
PAIRS = FIELDS.map(lambda fields: [f"{key}: {value}" for key, value in fields])
ITEMS = (
    PAIRS.map(lambda pairs: "{" + ", ".join(pairs) + "}")  # flow style
    | PAIRS.filter(bool).map("\n    ".join)  # block style
    | VALUES  # not a mapping at all
)
JOBS = st.lists(ITEMS, max_size=4).map(lambda items: "".join(f"  - {item}\n" for item in items))


def outcome(load: Callable[[], object]) -> object:
    try:
        return load()
    except ConfigError as error:
        return error.problems


def both_ways(load: Callable[[], object]) -> tuple[object, object]:
    """What `load` gives with the usual-item shortcut and without it."""
    with_shortcut = outcome(load)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sections, "_usual_job", lambda node: None)
        return with_shortcut, outcome(load)


def assert_read_alike(jobs: str) -> None:
    """The `jobs:` lines give the same jobs or problems with the shortcut as without."""
    fast, general = both_ways(lambda: parse_config(AUTH + "jobs:\n" + jobs, "cfg.yaml", ENV))
    assert fast == general
    fast, general = both_ways(lambda: parse_jobs_file("jobs:\n" + jobs, "jobs.yaml"))
    assert fast == general


# One item for each of the shortcut's conditions, failing just that one.
@pytest.mark.parametrize(
    "item",
    [
        "[module, 1]",
        "{module: Leads, job_id: 1, x: 1}",
        "{Module: Leads, job_id: 1}",
        "{module: Leads, jobid: 1}",
        "{module: Leads, module: Deals}",
        "{module: [Leads], job_id: 1}",
        "{job_id: [1], module: Leads}",
        "{module: 9Leads, job_id: 1}",
        "{module: Leads, job_id: 1e3}",
        "{module: Leads, job_id: ${ID}}",
    ],
)
def test_unusual_items_are_left_to_the_general_path(item: str) -> None:
    assert_read_alike(f"  - {item}\n")


@given(JOBS)
def test_jobs_read_with_the_shortcut_as_without(jobs: str) -> None:
    assert_read_alike(jobs)


@pytest.mark.parametrize(
    "item",
    [
        "{module: Leads, job_id: '554023000000000000'}",
        "{job_id: 7, module: Deals_2}",
        "module: Leads\n  job_id: 0123",
        "{module: !!str Leads, job_id: &id 12}",
    ],
)
def test_usual_items_take_the_shortcut(item: str) -> None:
    """Keeps the property above from passing only because the shortcut never fires."""
    root = yaml.compose(f"- {item}\n", Loader=yaml_tree.LOADER)
    assert isinstance(root, SequenceNode)
    (job,) = root.value
    assert sections._usual_job(job) == sections._job(Reader("cfg.yaml", None), job, "jobs[0]")
    assert isinstance(sections._usual_job(job), JobSpec)


# Plain scalars that YAML 1.1 reads as null or as something else, in the places a scalar can go.
SCALARS = st.sampled_from(
    [
        *("", "~", "null", "Null", "NULL", "nULL", "nul", "None", "no", "NO", "off", "yes"),
        *("0", "0123", "1_000", "0x1F", "0b1", "1:30", ".inf", ".NaN", "1e3", "2001-12-14"),
        *("=", "<<", "'null'", '"~"', "!!null x", "!!str null", "! null", "!custom ~"),
        *("~ # comment", "null\n  folded", "|\n  null\n", ">-\n  ~\n", "&anchor null", "*anchor"),
    ]
) | st.text(st.sampled_from("~nulNL0x1.:-'\"!&*#[]{},? \n"), max_size=8)
TEMPLATES = st.sampled_from(
    ["{0}", "a: {0}\n", "- {0}\n", "{0}: b\n", "[{0}, {0}]\n", "{{k: {0}}}\n", "a:\n  - {0}\n"]
)


def shape(node: Node) -> object:
    """All of a node that the walk reads: kind, text, null or not, position, children."""
    where = (node.start_mark.line, node.start_mark.column, node.end_mark.line)
    if isinstance(node, ScalarNode):
        return ("scalar", node.value, node.tag == yaml_tree.NULL_TAG, where)
    if isinstance(node, MappingNode):
        return ("mapping", [(shape(key), shape(value)) for key, value in node.value], where)
    return ("list", [shape(item) for item in node.value], where)


def composed(text: str, loader: type[yaml.SafeLoader | yaml.CSafeLoader]) -> object:
    try:
        root = yaml.compose(text, Loader=loader)
    except Exception as error:  # the same failure either way is as good as the same tree
        return (type(error), str(error))
    return None if root is None else shape(root)


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml_tree.LOADER])
@given(text=st.builds(str.format, TEMPLATES, SCALARS))
def test_the_composer_sees_null_where_pyyaml_does(
    loader: type[yaml.SafeLoader | yaml.CSafeLoader], text: str
) -> None:
    assert composed(text, yaml_tree._null_resolving(loader)) == composed(text, loader)
