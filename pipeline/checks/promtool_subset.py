"""The rules a promtool test file needs: its assertions' alerts and expressions, and every rule
they read, transitively through recording rules, found by parsing the PromQL (promql-parser, a
port of Prometheus' own parser). `split` writes each test group as a test file of its own beside
copies of its rule files that keep only the rules that group needs, in their own groups and order.

Why: promtool evaluates every rule of a test file's rule files at each evaluation step of each
test group; a rule no assertion reads only costs time (the SLO tests run 7 h of 1 m steps over
every alert of the chart). A rule left out cannot change a kept one: a kept rule's inputs are
the test's series and the rules it reads, which are kept, evaluated in the same group order.

Whenever a dependency cannot be told exactly, everything is kept: an expression that selects no
fixed metric name (`{__name__=~"..."}`, `{job="x"}`), one that does not parse (promtool then
reports it), a template calling `query`, a rule file that cannot be read. `ALERTS` and
`ALERTS_FOR_STATE` read keep every alerting rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser as pp
import yaml

# libyaml's loader and dumper when PyYAML has them: the pure-Python ones take most of the split's time.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
ALERT_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})
# Go templates in labels/annotations may run a query (`{{ query "..." }}`): an unknown read.
_TEMPLATE_QUERY = re.compile(r"\{\{[^}]*\bquery\b")


def load_yaml(path: Path) -> Any:
    """`path` as YAML (yaml.safe_load's types, with libyaml's speed); OSError, yaml.YAMLError."""
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a safe loader


class Unknown(Exception):
    """A read that cannot be pinned to metric names: keep every rule."""


@functools.lru_cache(maxsize=4096)
def reads(expr: str) -> frozenset[str]:
    """The metric names `expr` selects; Unknown if it selects by anything else or does not parse."""
    try:
        tree = pp.parse(expr)
    except Exception as exc:  # the binding raises bare ValueError/RuntimeError with the parser's message
        raise Unknown(f"not PromQL: {expr!r}: {exc}") from exc
    names: set[str] = set()
    unknown: list[str] = []

    def visit(node: pp.Expr) -> None:
        if not isinstance(node, pp.VectorSelector):
            return
        if node.matchers.or_matchers:
            unknown.append(str(node))
            return
        equal = [
            m.value for m in node.matchers.matchers if m.name == "__name__" and str(m.op).rsplit(".", 1)[-1] == "Equal"
        ]
        name = node.name or (equal[0] if equal else None)
        if name is None:
            unknown.append(str(node))
        else:
            names.add(name)

    pp.walk(tree, visit)
    if unknown:
        raise Unknown(f"selects no fixed metric name: {unknown[0]}")
    return frozenset(names)


@dataclass(frozen=True)
class Rule:
    file: int  # index in the test file's rule files
    group: int
    index: int
    record: str | None
    alert: str | None
    body: dict[str, Any]

    def reads(self) -> frozenset[str]:
        templates = [*(self.body.get("labels") or {}).values(), *(self.body.get("annotations") or {}).values()]
        if any(_TEMPLATE_QUERY.search(str(t)) for t in templates):
            raise Unknown(f"{self.alert or self.record}: a template runs a query")
        return reads(str(self.body.get("expr", "")))


def _rules(rule_docs: list[dict[str, Any]]) -> list[Rule]:
    found = []
    for f, doc in enumerate(rule_docs):
        for g, group in enumerate(doc.get("groups") or []):
            for i, body in enumerate(group.get("rules") or []):
                found.append(Rule(f, g, i, body.get("record"), body.get("alert"), body))
    return found


def needed(rule_docs: list[dict[str, Any]], test: dict[str, Any]) -> set[tuple[int, int, int]] | None:
    """(file, group, rule) indexes of the rules `test`'s assertions depend on; None: keep all."""
    rules = _rules(rule_docs)
    recorded: dict[str, list[Rule]] = {}
    alerting = [r for r in rules if r.alert]
    for r in rules:
        if r.record:
            recorded.setdefault(r.record, []).append(r)
    keep: dict[tuple[int, int, int], Rule] = {}
    todo: list[Rule] = []

    def add(found: Iterable[Rule]) -> None:
        for r in found:
            if (r.file, r.group, r.index) not in keep:
                keep[(r.file, r.group, r.index)] = r
                todo.append(r)

    def add_reads(names: frozenset[str]) -> None:
        for name in names:
            add(recorded.get(name, []))
        if names & ALERT_SERIES:
            add(alerting)

    try:
        for group in test.get("tests") or []:
            for case in group.get("alert_rule_test") or []:
                add(r for r in alerting if r.alert == case.get("alertname"))
            for case in group.get("promql_expr_test") or []:
                add_reads(reads(str(case.get("expr", ""))))
        while todo:
            add_reads(todo.pop().reads())
    except Unknown:
        return None
    return set(keep)


@dataclass(frozen=True)
class GroupFile:
    """One test group of a test file, written as a test file of its own."""

    path: str  # relative to the directory the group files were written under


def split(test_file: Path, rule_files: list[Path], dest: Path, root: Path) -> list[GroupFile] | None:
    """Write each test group of `test_file` as `dest/group-<i>-of-<n>.yaml`, naming copies of
    `rule_files` (in `dest/group-<i>-rules/NNN-<name>`) that keep only the rules that group's
    assertions need (all of them when that cannot be told). Paths returned are relative to
    `root`, promtool's working directory, so its `Unit Testing:` header names file and group.

    promtool runs each test group on its own storage and its own load of the rule files, so a
    group alone is the same test. None, writing nothing, when `test_file` or a rule file cannot
    be read as one: the original then runs as it is, and promtool says what is wrong."""
    try:
        test, test_node = load_yaml(test_file), _compose(test_file)
        docs, doc_nodes = [load_yaml(f) for f in rule_files], [_compose(f) for f in rule_files]
    except (OSError, yaml.YAMLError):
        return None
    groups = test.get("tests") if isinstance(test, dict) else None
    if not groups or not isinstance(groups, list) or not all(isinstance(d, dict) for d in docs):
        return None
    try:
        plans = [needed(docs, {**test, "tests": [group]}) for group in groups]
        rule_nodes = [_rule_nodes(doc, node) for doc, node in zip(docs, doc_nodes, strict=True)]
    except (AttributeError, TypeError, ValueError):  # malformed: promtool reports it on the original
        return None
    group_nodes = _items(_value(test_node, "tests"))
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (group_node, keep) in enumerate(zip(group_nodes, plans, strict=True), start=1):
        rules_dir = dest / f"group-{i}-rules"
        rules_dir.mkdir()
        names, kept_groups = [], set()
        for f, (src, doc_node) in enumerate(zip(rule_files, doc_nodes, strict=True)):
            kept = []
            for g, (name_of, rule_group, rules) in enumerate(rule_nodes[f]):
                chosen = [r for n, r in enumerate(rules) if keep is None or (f, g, n) in keep]
                if chosen:
                    kept.append(_replace(rule_group, "rules", _seq(chosen)))
                    kept_groups.add(name_of)
            # The index prefix keeps the rule files' order (promtool loads them in the order given).
            name = f"{f:03d}-{src.name}"
            (rules_dir / name).write_text(_serialize(_replace(doc_node, "groups", _seq(kept))))
            names.append(f"{rules_dir.name}/{name}")
        out = _replace(test_node, "rule_files", _seq(_str(n) for n in names))
        out = _replace(out, "tests", _seq([group_node]))
        order = _value(test_node, "group_eval_order")
        if order is not None:
            # promtool rejects an order naming a group it has not loaded.
            out = _replace(out, "group_eval_order", _seq(n for n in _items(order) if n.value in kept_groups))
        path = dest / f"group-{i}-of-{len(groups)}.yaml"
        path.write_text(_serialize(out))
        written.append(GroupFile(str(path.relative_to(root))))
    return written


# The files are rewritten at the level of YAML nodes: every scalar keeps its source text and
# style (`0.10` stays `0.10`, a quoted string stays quoted), so promtool reads what it would
# have read in the original; only the lists of rules, groups, test groups and files change.
_STR, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq"


def _compose(path: Path) -> yaml.Node:
    node = yaml.compose(path.read_text(), Loader=_Loader)
    if node is None:
        raise yaml.YAMLError(f"{path}: no YAML document")
    return node


def _serialize(node: yaml.Node) -> str:
    return str(yaml.serialize(node, Dumper=_Dumper))


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _items(node: yaml.Node | None) -> list[Any]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _replace(node: yaml.Node, key: str, value: yaml.Node) -> yaml.MappingNode:
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"not a mapping: {node.start_mark}")
    pairs = [(k, value if isinstance(k, yaml.ScalarNode) and k.value == key else v) for k, v in node.value]
    if _value(node, key) is None:
        pairs.append((_str(key), value))
    return yaml.MappingNode(node.tag, pairs, flow_style=node.flow_style)


def _seq(items: Iterable[yaml.Node]) -> yaml.SequenceNode:
    return yaml.SequenceNode(_SEQ, list(items))


def _str(text: str) -> yaml.ScalarNode:
    return yaml.ScalarNode(_STR, text)


def _rule_nodes(doc: dict[str, Any], node: yaml.Node) -> list[tuple[Any, yaml.Node, list[Any]]]:
    """(name, group node, rule nodes) of each group, checked against the loaded `doc` rule by
    rule (ValueError if they differ, as YAML merge keys could make them)."""
    found = []
    groups = doc.get("groups") or []
    group_nodes = _items(_value(node, "groups"))
    if len(group_nodes) != len(groups):
        raise ValueError("groups differ between the loaded and the composed rule file")
    for group, group_node in zip(groups, group_nodes, strict=True):
        rules = _items(_value(group_node, "rules"))
        if len(rules) != len(group.get("rules") or []):
            raise ValueError(f"rules of group {group.get('name')!r} differ between loaded and composed")
        found.append((group.get("name"), group_node, rules))
    return found
