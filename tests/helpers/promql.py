"""The series a PromQL expression reads, parsed with promql-parser (a port of Prometheus' own parser).

Tests use it to hold alert and dashboard expressions against the metric names and labels a real
process exports, instead of grepping the expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser as pp


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        # Prometheus anchors label regexes.
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]


_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _matcher(m: pp.Matcher) -> Matcher:
    op = str(m.op).rsplit(".", 1)[-1]
    return Matcher(m.name, _OPS[op], m.value)


def _walk(node: object, out: list[Selector]) -> None:
    if isinstance(node, pp.VectorSelector):
        matchers = tuple(_matcher(m) for m in node.matchers.matchers)
        name = node.name or next((m.value for m in matchers if m.label == "__name__"), "")
        out.append(Selector(name, tuple(m for m in matchers if m.label != "__name__")))
    elif isinstance(node, pp.MatrixSelector):
        _walk(node.vector_selector, out)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            _walk(arg, out)
    elif isinstance(node, pp.AggregateExpr):
        _walk(node.expr, out)
        if node.param is not None:
            _walk(node.param, out)
    elif isinstance(node, pp.BinaryExpr):
        _walk(node.lhs, out)
        _walk(node.rhs, out)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        _walk(node.expr, out)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr`, in order; a syntax error raises ValueError naming the expression."""
    try:
        tree = pp.parse(expr)
    except Exception as exc:  # the binding raises a bare ValueError/RuntimeError with the parser's message
        raise ValueError(f"not PromQL: {expr!r}: {exc}") from exc
    out: list[Selector] = []
    _walk(tree, out)
    return out
