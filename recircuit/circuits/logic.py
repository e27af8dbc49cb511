"""A Boolean view of forget and retain circuits, solved with a SAT solver: which nodes to switch off, which conflict.

Usage::

    from recircuit.circuits.logic import BooleanCircuit, LogicConfig, localize
    forget = BooleanCircuit.from_scores("forget", node_attribution(model, forget_clean, forget_corrupt))
    retain = BooleanCircuit.from_scores("retain", node_attribution(model, retain_clean, retain_corrupt))
    loc = localize(forget, [retain])
    loc.forget_nodes      # switched off by the solver: the forget objective trains them
    loc.conflict_nodes    # in the forget circuit, but no assignment keeps the retain outputs without them
    loc.core              # when forgetting and retaining cannot both hold: a minimal set of clashing constraints

**Nodes and gates** (the rule; CLUE's idea, our formulation). A node is an MLP neuron or an
attention head (:mod:`recircuit.circuits.neurons`). On a circuit's data, with ``T`` the metric's
clean-minus-corrupted gap, each node has

- *necessity* ``n = -noising / T``: the fraction of the behaviour lost when the node alone is
  broken (its corrupted value patched into the clean run);
- *sufficiency* ``s = denoising / T``: the fraction restored when the node alone is repaired
  (its clean value patched into the corrupted run).

A node joins the circuit when ``max(n, s) >= threshold`` (:class:`LogicConfig`; at most
``max_nodes`` of them, the largest first). It is an **AND** input when ``n >= s`` (the output
needs it: breaking it breaks the output) and an **OR** input otherwise (it suffices: it restores
the output alone, and other OR inputs can stand in for it). The circuit's output is
``out = AND(and inputs) AND OR(or inputs)`` (a missing part is left out) over variables
``x_v`` = "node ``v`` works as it does now". This is a two-level circuit: node scores give no
wiring between nodes, and scoring every neuron-to-neuron edge is out of reach on a real model.

**Constraints.** The forget circuit's output must be False (the model no longer produces what
it memorized) and every retain circuit's output True. The formula is put in CNF with Tseitin
variables for each gate and solved with a SAT solver (python-sat); the choice among solutions is
a weighted MaxSAT (RC2): switch off as much of the forget circuit as the retain outputs allow,
weighted by each node's importance to the forget behaviour. The result reads as three groups:

- **forget nodes**: forget-circuit nodes the optimum switches off;
- **conflict nodes**: forget-circuit nodes the optimum keeps working because a retain output
  needs them, alone (no satisfying assignment switches them off) or together (the last working
  input of a retain OR group the forget circuit also holds); they get the combined forget +
  retain objective;
- **untouched**: everything else (frozen).

When the forget output cannot be made False at all (every way to break it switches off a node a
retain output needs), the formula is unsatisfiable: :func:`localize` then returns
``satisfiable=False`` with a **minimal** unsatisfiable core over the named constraints (the forget
output, each retain output, each retain AND input) instead of raising, and every forget-circuit
node is a conflict node.

**Why hand-written.** python-sat solves; no library builds circuits from attribution scores or
reads a SAT assignment as unlearning groups.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from recircuit.circuits.neurons import NodeScores
from recircuit.errors import InputError

logger = logging.getLogger(__name__)

#: A node: ``(kind, layer, index)`` with ``kind`` ``"neuron"`` or ``"head"``.
Node = tuple[str, int, int]


@dataclass
class LogicConfig:
    """How node scores become a Boolean circuit.

    Attributes:
        threshold: a node joins the circuit when its necessity or sufficiency is at least this
            fraction of the circuit's metric gap.
        max_nodes: at most this many nodes per circuit (the largest ``max(n, s)`` first).
        min_gap: the smallest ``|clean - corrupted|`` metric gap accepted (below it fractions of
            the gap mean nothing). It only guards the division: whether a corruption moves the
            behaviour beyond noise is :func:`recircuit.circuits.faithfulness.check_corruption`'s
            question, and the circuit keeps its ``gap`` for the report.
    """

    threshold: float = 0.02
    max_nodes: int = 256
    min_gap: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise InputError(f"must be in (0, 1), got {self.threshold!r}", field="threshold", fix="e.g. 0.02")
        if not isinstance(self.max_nodes, int) or self.max_nodes < 1:
            raise InputError(f"must be a whole number >= 1, got {self.max_nodes!r}", field="max_nodes")


@dataclass
class BooleanCircuit:
    """A two-level Boolean circuit over nodes: ``AND(and_nodes) AND OR(or_nodes)``.

    Attributes:
        name: what it computes (``"forget"``, ``"retain"``, ...), used in cores.
        and_nodes: the inputs the output needs.
        or_nodes: the inputs any one of which suffices.
        necessity: per node, the fraction of the gap lost when it alone is broken.
        sufficiency: per node, the fraction restored when it alone is repaired.
        gap: the clean-minus-corrupted metric gap the fractions are of.
    """

    name: str
    and_nodes: list[Node]
    or_nodes: list[Node]
    necessity: dict[Node, float] = field(default_factory=dict)
    sufficiency: dict[Node, float] = field(default_factory=dict)
    gap: float = 0.0

    def __post_init__(self) -> None:
        both = set(self.and_nodes) & set(self.or_nodes)
        if both or len(set(self.and_nodes)) != len(self.and_nodes) or len(set(self.or_nodes)) != len(self.or_nodes):
            raise InputError(f"the {self.name} circuit lists a node twice (first in both: {sorted(both)[:1]})",
                             field="and_nodes", fix="give each node one gate")

    @property
    def nodes(self) -> list[Node]:
        """Every input, AND inputs first."""
        return list(self.and_nodes) + list(self.or_nodes)

    def importance(self, node: Node) -> float:
        """``max(necessity, sufficiency)`` of ``node`` (0 outside the circuit)."""
        return max(self.necessity.get(node, 0.0), self.sufficiency.get(node, 0.0))

    def evaluate(self, on: set[Node] | dict[Node, bool]) -> bool:
        """The output when exactly the nodes in ``on`` work (a dict: node -> works)."""
        works = (lambda v: on.get(v, True)) if isinstance(on, dict) else (lambda v: v in on)
        return all(works(v) for v in self.and_nodes) and (not self.or_nodes or any(works(v) for v in self.or_nodes))

    @classmethod
    def from_scores(cls, name: str, scores: NodeScores, config: LogicConfig | None = None,
                    kinds: Sequence[str] = ("neuron", "head")) -> BooleanCircuit:
        """Build the circuit from node scores in both directions (see the module docstring for the rule).

        Raises:
            InputError: scores without both directions, or a metric gap below ``config.min_gap``.
        """
        config = config or LogicConfig()
        for table in (scores.neurons, scores.heads):
            if not {"denoising", "noising"} <= set(table):
                raise InputError(f"the {name} circuit needs node scores in both directions, got {sorted(table)}",
                                 field="directions", fix="compute them with NodeAttributionConfig(directions="
                                 "('denoising', 'noising'))")
        gap = scores.clean_metric - scores.corrupted_metric
        if abs(gap) < config.min_gap:
            raise InputError(f"the {name} circuit's corruption moves the metric by {gap:.2g} only, so no node can be "
                             "necessary or sufficient", field="corruption",
                             fix="use a corruption that changes the answer (e.g. label_flip) or more samples")
        nec, suf = {}, {}
        for kind in kinds:
            table = scores.neurons if kind == "neuron" else scores.heads
            n = (-table["noising"] / gap).numpy()
            s = (table["denoising"] / gap).numpy()
            for layer in range(n.shape[0]):
                for i in range(n.shape[1]):
                    if max(n[layer, i], s[layer, i]) >= config.threshold:
                        nec[(kind, layer, i)], suf[(kind, layer, i)] = float(n[layer, i]), float(s[layer, i])
        kept = sorted(nec, key=lambda v: -max(nec[v], suf[v]))[: config.max_nodes]
        kept_set = set(kept)
        return cls(name, [v for v in kept if nec[v] >= suf[v]], [v for v in kept if nec[v] < suf[v]],
                   {v: nec[v] for v in kept_set}, {v: suf[v] for v in kept_set}, float(gap))


@dataclass
class Localization:
    """What :func:`localize` found.

    Attributes:
        forget_nodes: switched off by the optimum (the forget objective trains them).
        conflict_nodes: forget-circuit nodes the optimum keeps working for a retain output.
        satisfiable: whether forget False and every retain True can hold together.
        core: when not satisfiable, a minimal set of named constraints that cannot all hold.
        n_variables: variables of the CNF (nodes plus Tseitin gates).
        n_clauses: clauses of the CNF.
    """

    forget_nodes: list[Node]
    conflict_nodes: list[Node]
    satisfiable: bool
    core: list[str]
    n_variables: int
    n_clauses: int

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = asdict(self)
        d["forget_nodes"] = [list(v) for v in self.forget_nodes]
        d["conflict_nodes"] = [list(v) for v in self.conflict_nodes]
        return d


class _Encoder:
    """Tseitin encoding of Boolean circuits over shared node variables, with named selector literals."""

    def __init__(self) -> None:
        from pysat.formula import IDPool

        self.pool = IDPool()
        self.clauses: list[list[int]] = []
        self.selectors: dict[int, str] = {}

    def node(self, v: Node) -> int:
        return self.pool.id(("node", v))

    def _and(self, lits: list[int], tag) -> int:
        g = self.pool.id(("and", tag))
        self.clauses += [[-g, x] for x in lits] + [[g] + [-x for x in lits]]
        return g

    def _or(self, lits: list[int], tag) -> int:
        g = self.pool.id(("or", tag))
        self.clauses += [[-g] + lits] + [[g, -x] for x in lits]
        return g

    def output(self, c: BooleanCircuit) -> int:
        """A literal equivalent to ``c``'s output."""
        parts = []
        if c.and_nodes:
            parts.append(self._and([self.node(v) for v in c.and_nodes], (c.name, "and")))
        if c.or_nodes:
            parts.append(self._or([self.node(v) for v in c.or_nodes], (c.name, "or")))
        if not parts:
            t = self.pool.id(("true", c.name))
            self.clauses.append([t])
            return t
        return parts[0] if len(parts) == 1 else self._and(parts, (c.name, "out"))

    def require(self, lit: int, name: str) -> int:
        """``selector -> lit``; the selector (assumed True) names the constraint in cores."""
        s = self.pool.id(("sel", name))
        self.clauses.append([-s, lit])
        self.selectors[s] = name
        return s


def _minimal_core(clauses: list[list[int]], core: list[int]) -> list[int]:
    """Shrink an unsatisfiable core of assumptions to a minimal one (deletion-based)."""
    from pysat.solvers import Solver

    core = list(core)
    with Solver(name="g4", bootstrap_with=clauses) as s:
        i = 0
        while i < len(core):
            trial = core[:i] + core[i + 1:]
            if not s.solve(assumptions=trial):
                core = trial
            else:
                i += 1
    return core


def localize(forget: BooleanCircuit, retain: Sequence[BooleanCircuit]) -> Localization:
    """Forget and conflict nodes from the forget circuit and the retain circuits (see the module docstring).

    Raises:
        InputError: an empty forget circuit (no node above the threshold).
    """
    from pysat.examples.rc2 import RC2
    from pysat.formula import WCNF
    from pysat.solvers import Solver

    names = [forget.name] + [c.name for c in retain]
    if len(set(names)) != len(names):
        raise InputError(f"circuit names must differ (they name the constraints), got {names}", field="name",
                         fix="give each retain circuit its own name, none of them the forget circuit's")
    if not forget.nodes:
        raise InputError("the forget circuit has no node above the threshold, so there is nothing to switch off",
                         field="threshold", fix="lower LogicConfig.threshold or attribute on more forget samples")
    enc = _Encoder()
    sels = [enc.require(-enc.output(forget), "forget output False")]
    for c in retain:
        if not c.nodes:
            logger.warning("the %s circuit has no node above the threshold: it constrains nothing", c.name)
        sels.append(enc.require(enc.output(c), f"{c.name} output True"))
        for v in c.and_nodes:          # named so that a core can say which needed node clashes
            sels.append(enc.require(enc.node(v), f"{c.name} needs {v[0]} L{v[1]}.{v[2]}"))
    clauses = enc.clauses
    with Solver(name="g4", bootstrap_with=clauses) as s:
        sat = s.solve(assumptions=sels)
        if not sat:
            core = _minimal_core(clauses, s.get_core())
            names = sorted(enc.selectors[x] for x in core)
            return Localization([], list(forget.nodes), False, names, enc.pool.top, len(clauses))
    wcnf = WCNF()
    for cl in clauses:
        wcnf.append(cl)
    for x in sels:
        wcnf.append([x])
    for v in forget.nodes:                 # prefer switching the forget circuit off, weighted by importance
        wcnf.append([-enc.node(v)], weight=max(1, round(1000 * forget.importance(v))))
    with RC2(wcnf) as rc2:
        model = set(rc2.compute() or [])
    off = [v for v in forget.nodes if -enc.node(v) in model]
    return Localization(off, [v for v in forget.nodes if v not in set(off)], True, [], enc.pool.top, len(clauses))
