"""Declarative, versioned expert rules over the feature vector, with per-region overrides and hot reload.

A rule set is YAML (``fuelcard/rules/default.yaml``): each rule has an ``id``, a ``family``, a ``reason`` text,
a ``severity`` (info / review / decline) and ``when``, a list of ``[feature, op, value]`` conditions that must
all hold. Conditions on a missing (NaN) feature never hold. ``regions.<name>.overrides.<id>`` may replace
``value`` (of the first condition), ``when``, ``severity`` or ``enabled`` for transactions in that region.

Rules are compiled once per region into index-based checks so evaluating them costs a few microseconds.
:class:`ReloadingRuleSet` re-reads the file when it changes, so operators edit rules without a restart.

>>> rules = load_rules()
>>> from fuelcard.features import FEATURE_NAMES
>>> x = [float("nan")] * len(FEATURE_NAMES)
>>> x[FEATURE_INDEX["card_spend_24h_incl"]] = 9000.0
>>> [h.rule_id for h in rules.evaluate(x)]
['DAILY_SPEND_HIGH', 'DAILY_SPEND_EXTREME']
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fuelcard.features import FEATURE_INDEX

DEFAULT_RULES_PATH = Path(__file__).parent / "rules" / "default.yaml"
SEVERITIES = ("info", "review", "decline")
SEVERITY_RANK = {"info": 0, "review": 1, "decline": 2}
RULE_FAMILIES = (
    "daily_cumulative_limit", "min_interval", "frequency_cap", "tank_capacity", "unusual_hours",
    "new_device_station", "impossible_travel", "fleet_policy", "family_limit",
)


class RuleError(ValueError):
    """An invalid rule file."""


def _between(x: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= x <= bounds[1]


def _in(x: float, values: frozenset[float]) -> bool:
    return x in values


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
    "!=": lambda a, b: a == a and a != b,  # NaN never satisfies a condition
    "between": _between, "in": _in,
}


@dataclass(frozen=True, slots=True)
class Condition:
    feature: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Rule:
    """One expert rule."""

    rule_id: str
    family: str
    reason: str
    severity: str
    when: tuple[Condition, ...]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A rule that fired on a transaction."""

    rule_id: str
    severity: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    hit: RuleHit
    rank: int
    checks: tuple[tuple[int, Callable[[Any, Any], bool], Any], ...]


def _parse_condition(raw: Any, rule_id: str) -> Condition:
    if isinstance(raw, Mapping):
        raw = [raw.get("feature"), raw.get("op"), raw.get("value")]
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        raise RuleError(f"rule {rule_id}: a condition must be [feature, op, value], got {raw!r}")
    feature, op, value = raw
    if feature not in FEATURE_INDEX:
        raise RuleError(f"rule {rule_id}: unknown feature {feature!r}")
    if op not in _OPS:
        raise RuleError(f"rule {rule_id}: unknown operator {op!r}")
    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise RuleError(f"rule {rule_id}: between needs [low, high]")
        value = (float(value[0]), float(value[1]))
    elif op == "in":
        value = frozenset(float(v) for v in value)
    else:
        value = float(value)
    return Condition(str(feature), str(op), value)


def _parse_rule(raw: Mapping[str, Any]) -> Rule:
    rule_id = str(raw.get("id", "")).strip()
    if not rule_id:
        raise RuleError("a rule has no id")
    severity = str(raw.get("severity", "review"))
    if severity not in SEVERITIES:
        raise RuleError(f"rule {rule_id}: severity must be one of {SEVERITIES}")
    family = str(raw.get("family", ""))
    if family not in RULE_FAMILIES:
        raise RuleError(f"rule {rule_id}: unknown family {family!r}")
    when = raw.get("when") or []
    if not when:
        raise RuleError(f"rule {rule_id}: no conditions")
    return Rule(rule_id, family, str(raw.get("reason", rule_id)), severity,
                tuple(_parse_condition(c, rule_id) for c in when), bool(raw.get("enabled", True)))


def _override(rule: Rule, ov: Mapping[str, Any]) -> Rule:
    when = rule.when
    if "when" in ov:
        when = tuple(_parse_condition(c, rule.rule_id) for c in ov["when"])
    elif "value" in ov:
        first = when[0]
        when = (_parse_condition([first.feature, first.op, ov["value"]], rule.rule_id),) + when[1:]
    severity = str(ov.get("severity", rule.severity))
    if severity not in SEVERITIES:
        raise RuleError(f"rule {rule.rule_id}: severity must be one of {SEVERITIES}")
    return Rule(rule.rule_id, rule.family, str(ov.get("reason", rule.reason)), severity, when,
                bool(ov.get("enabled", rule.enabled)))


def _compile(rules: tuple[Rule, ...]) -> tuple[_Compiled, ...]:
    return tuple(
        _Compiled(RuleHit(r.rule_id, r.severity, r.reason), SEVERITY_RANK[r.severity],
                  tuple((FEATURE_INDEX[c.feature], _OPS[c.op], c.value) for c in r.when))
        for r in rules if r.enabled
    )


def _condition_code(c: Condition, var: str, consts: dict[str, Any]) -> str:
    if c.op in (">", ">=", "<", "<=", "=="):  # NaN compares False: a missing feature never fires
        return f"{var} {c.op} {float(c.value)!r}"
    if c.op == "!=":
        return f"({var} == {var} and {var} != {float(c.value)!r})"
    if c.op == "between":
        lo, hi = c.value
        return f"{float(lo)!r} <= {var} <= {float(hi)!r}"
    name = f"_S{len(consts)}"
    consts[name] = c.value
    return f"({var} == {var} and {var} in {name})"


def _codegen(rules: tuple[Rule, ...]) -> Callable[[list[float]], list[RuleHit]]:
    """One generated function per rule variant: straight-line comparisons, a microsecond or two."""
    consts: dict[str, Any] = {}
    lines = ["def _evaluate(x):", "    hits = []"]
    for r in rules:
        if not r.enabled:
            continue
        hit = f"_H{len(consts)}"
        consts[hit] = RuleHit(r.rule_id, r.severity, r.reason)
        conds = []
        for c in r.when:
            conds.append(_condition_code(c, f"x[{FEATURE_INDEX[c.feature]}]", consts))
        lines.append(f"    if {' and '.join(conds)}:")
        lines.append(f"        hits.append({hit})")
    lines.append("    return hits")
    namespace: dict[str, Any] = dict(consts)
    exec(compile("\n".join(lines) + "\n", "<rules>", "exec"), namespace)  # noqa: S102 - generated from validated rules
    return namespace["_evaluate"]


@dataclass(frozen=True)
class RuleSet:
    """A parsed rule set: default rules plus per-region variants, compiled for fast evaluation."""

    version: str
    rules: tuple[Rule, ...]
    region_rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    _compiled: dict[str | None, tuple[_Compiled, ...]] = field(default_factory=dict, repr=False, compare=False)

    _fast: dict[str | None, Callable[[list[float]], list[RuleHit]]] = field(default_factory=dict, repr=False,
                                                                           compare=False)

    def __post_init__(self) -> None:
        self._compiled[None] = _compile(self.rules)
        self._fast[None] = _codegen(self.rules)
        for region, rules in self.region_rules.items():
            self._compiled[region] = _compile(rules)
            self._fast[region] = _codegen(rules)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> RuleSet:
        """Build from a parsed YAML document (validates everything)."""
        if not isinstance(doc, Mapping):
            raise RuleError("a rule file must be a mapping with version and rules")
        version = str(doc.get("version", "")).strip()
        if not version:
            raise RuleError("a rule file needs a version")
        raw_rules = doc.get("rules") or []
        rules = tuple(_parse_rule(r) for r in raw_rules)
        ids = [r.rule_id for r in rules]
        if len(ids) != len(set(ids)):
            raise RuleError("duplicate rule ids")
        by_id = {r.rule_id: r for r in rules}
        region_rules: dict[str, tuple[Rule, ...]] = {}
        for region, spec in (doc.get("regions") or {}).items():
            ovs = (spec or {}).get("overrides") or {}
            unknown = set(ovs) - set(by_id)
            if unknown:
                raise RuleError(f"region {region}: overrides unknown rule(s) {sorted(unknown)}")
            region_rules[str(region)] = tuple(_override(r, ovs[r.rule_id]) if r.rule_id in ovs else r for r in rules)
        return cls(version, rules, region_rules)

    def families(self) -> set[str]:
        """Rule families covered."""
        return {r.family for r in self.rules}

    def evaluate(self, x: list[float], region: str | None = None) -> list[RuleHit]:
        """The rules that fire on feature vector ``x`` (for ``region``'s variant when it has one)."""
        fast = self._fast.get(region)
        if fast is None:
            fast = self._fast[None]
        return fast(x)

    def evaluate_reference(self, x: list[float], region: str | None = None) -> list[RuleHit]:
        """Same as :meth:`evaluate`, interpreted condition by condition (the reference for tests)."""
        compiled = self._compiled.get(region) or self._compiled[None]
        hits = []
        for c in compiled:
            for idx, op, value in c.checks:
                v = x[idx]
                if v != v or not op(v, value):
                    break
            else:
                hits.append(c.hit)
        return hits


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rule file (the packaged default when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_RULES_PATH
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise RuleError(f"cannot read rules {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RuleError(f"rules {p}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return RuleSet.from_mapping(doc)


class ReloadingRuleSet:
    """A rule file that is re-read when it changes (checked at most every ``check_every_s`` seconds).

    A broken edit keeps the last good rule set in force (and is reported in :attr:`last_error`).
    """

    def __init__(self, path: str | Path | None = None, *, check_every_s: float = 1.0) -> None:
        self.path = Path(path) if path is not None else DEFAULT_RULES_PATH
        self.check_every_s = check_every_s
        self._mtime = self._stat()
        self._rules = load_rules(self.path)
        self._next_check = time.monotonic() + check_every_s
        self.last_error: str | None = None

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def get(self) -> RuleSet:
        """The current rule set (re-read if the file changed)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_every_s
            self.reload_if_changed()
        return self._rules

    def reload_if_changed(self) -> bool:
        """Re-read the file now if its modification time changed; True when a new rule set was loaded."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self._rules = load_rules(self.path)
        except RuleError as exc:
            self.last_error = str(exc)
            return False
        self.last_error = None
        return True

    @property
    def version(self) -> str:
        return self._rules.version
