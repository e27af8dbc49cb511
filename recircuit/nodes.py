"""Node names of the head/MLP graph, built and parsed in one place.

Usage::

    from recircuit.nodes import parse_node, head_name, mlp_name
    head_name(3, 5)                    # 'a3.h5'
    mlp_name(2)                        # 'm2'
    parse_node("a3.h5")                # Node(kind='head', layer=3, index=5, channel=None)
    parse_node("a1.g0<k>")             # Node(kind='kv', layer=1, index=0, channel='k')
    parse_node("a3.h5<q>").module      # 'a3.h5' (the name without its reader suffix)

The grammar (see :mod:`recircuit.circuits.graph` for what each node reads or writes):

============  ================  ======================================================
name          kind              meaning
============  ================  ======================================================
``input``     ``"input"``       the embeddings (token + learned positions, if any)
``logits``    ``"logits"``      the unembedding's reader (``ln_final.hook_in``)
``a{L}.h{H}`` ``"head"``        query head ``H`` of layer ``L`` (writer; ``<q>`` reader)
``a{L}.g{G}`` ``"kv"``          KV group ``G`` of layer ``L`` (``<k>``/``<v>`` readers)
``m{L}``      ``"mlp"``         the MLP of layer ``L`` (writer and reader)
============  ================  ======================================================

A reader (backward node) may carry a channel suffix ``<q>``, ``<k>`` or ``<v>``. Every other
module in recircuit that needs a node's layer or head calls :func:`parse_node`; nothing else
splits these strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

NodeKind = Literal["input", "logits", "head", "kv", "mlp"]

_NODE = re.compile(r"^(?:a(?P<al>\d+)\.(?P<ak>[hg])(?P<ai>\d+)|m(?P<ml>\d+))(?:<(?P<chan>[qkv])>)?$")


@dataclass(frozen=True)
class Node:
    """A parsed node name.

    Attributes:
        kind: ``"input"``, ``"logits"``, ``"head"``, ``"kv"`` or ``"mlp"``.
        layer: the layer (``-1`` for ``input`` and ``logits``).
        index: head index (``head``), KV-group index (``kv``), ``-1`` otherwise.
        channel: reader channel ``"q"``, ``"k"``, ``"v"`` or ``None``.
    """

    kind: NodeKind
    layer: int = -1
    index: int = -1
    channel: str | None = None

    @property
    def head(self) -> int:
        """The head index of a ``head`` node (``-1`` for every other kind)."""
        return self.index if self.kind == "head" else -1

    @property
    def module(self) -> str:
        """The node's name without its reader suffix (``a3.h5<q>`` -> ``a3.h5``)."""
        if self.kind in ("input", "logits"):
            return self.kind
        if self.kind == "mlp":
            return mlp_name(self.layer)
        return head_name(self.layer, self.index) if self.kind == "head" else kv_name(self.layer, self.index)

    @property
    def name(self) -> str:
        """The full node name, suffix included (``parse_node(n).name == n``)."""
        return self.module + (f"<{self.channel}>" if self.channel else "")


def head_name(layer: int, head: int) -> str:
    """``a{layer}.h{head}``: query head ``head`` of ``layer``."""
    return f"a{layer}.h{head}"


def kv_name(layer: int, group: int) -> str:
    """``a{layer}.g{group}``: KV group ``group`` of ``layer``."""
    return f"a{layer}.g{group}"


def mlp_name(layer: int) -> str:
    """``m{layer}``: the MLP of ``layer``."""
    return f"m{layer}"


def reader_name(module: str, channel: str) -> str:
    """A reader node: ``reader_name("a3.h5", "q") == "a3.h5<q>"``."""
    return f"{module}<{channel}>"


def parse_node(name: str) -> Node:
    """Parse a node name (see the module docstring for the grammar).

    Raises:
        ValueError: for any name outside the grammar (the message lists the accepted forms).
    """
    if name in ("input", "logits"):
        return Node(name)  # type: ignore[arg-type]
    m = _NODE.match(name)
    if m is None:
        raise ValueError(f"Unknown node name {name!r}: expected 'a{{L}}.h{{H}}', 'a{{L}}.g{{G}}', 'm{{L}}' "
                         f"(optionally with '<q>', '<k>' or '<v>'), 'input' or 'logits'.")
    chan = m["chan"]
    if m["ml"] is not None:
        return Node("mlp", int(m["ml"]), -1, chan)
    return Node("head" if m["ak"] == "h" else "kv", int(m["al"]), int(m["ai"]), chan)


def is_module(name: str) -> bool:
    """True for a head ``a{L}.h{H}`` or an MLP ``m{L}`` without reader suffix."""
    try:
        n = parse_node(name)
    except ValueError:
        return False
    return n.kind in ("head", "mlp") and n.channel is None


def top_heads(importance: dict[str, float], k: int) -> list[tuple[int, int]]:
    """The ``k`` most important attention heads as ``(layer, head)`` pairs, best first.

    Ranks the *heads* among ``importance`` (node name -> score, e.g.
    :meth:`recircuit.circuits.Circuit.module_importance`), not the top modules: on a real
    recommender the top modules can all be MLPs, and heads still have to be picked for the
    attention view. Other nodes are skipped; ties keep the input order; no head gives ``[]``.
    """
    heads = [(n, v) for n, v in ((parse_node(name), v) for name, v in importance.items()) if n.kind == "head"]
    best = sorted(heads, key=lambda nv: -nv[1])[: max(int(k), 0)]
    return [(n.layer, n.index) for n, _ in best]

