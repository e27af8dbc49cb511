"""Circuits: selected edges of a scored graph, their module importance, and files.

Usage::

    from recircuit.circuits import attribute, Circuit
    res = attribute(model, clean, corrupted)
    circ = Circuit.from_attribution(res, top_n=200)            # or threshold=..., greedy=True
    circ.module_importance()                                   # {"a3.h5": ..., "m7": ...}
    circ.to_dataframe()                                        # one row per edge
    circ.save("circuits/forget")                               # forget.json + forget.safetensors

**Selection.** ``top_n`` edges by absolute (or signed) score, or every edge above a
``threshold``, or greedy growth from ``logits``: repeatedly add the best-scoring edge whose reader
is already connected to ``logits``. Then edges that cannot reach ``logits`` or are not reached
from ``input`` through kept edges are pruned (a head counts as reached through any of its
q/k/v readers).

**Module importance** of a head or MLP is the sum of absolute scores of its outgoing edges plus
its incoming edges (a query head gets its own ``<q>`` edges and ``1/group_size`` of its KV group's
``<k>``/``<v>`` edges). The circuit's own edges are used when ``within_circuit=True``; by default
all scored edges are used, which is what module grouping needs.

Faithfulness (MIB's f, CPR, CMD) is :mod:`recircuit.circuits.faithfulness`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from safetensors.torch import load_file, save_file

from recircuit._io import atomic_write, atomic_write_json
from recircuit.circuits.attribute import AttributionResult
from recircuit.circuits.graph import Graph
from recircuit.nodes import parse_node


def select_edges(
    scores: Float[torch.Tensor, "n_forward n_backward"], graph: Graph, top_n: int | None = None,
    threshold: float | None = None, absolute: bool = True, greedy: bool = False,
) -> Bool[torch.Tensor, "n_forward n_backward"]:
    """Choose edges by top-n, threshold or greedy growth from logits (then prune)."""
    mask = graph.edge_mask
    s = scores.abs() if absolute else scores
    s = torch.where(mask, s, torch.full_like(s, -float("inf")))
    keep = torch.zeros_like(mask)
    if greedy:
        if top_n is None:
            raise ValueError("greedy selection needs top_n (the number of edges to grow to)")
        connected = torch.zeros(graph.n_backward, dtype=torch.bool)
        connected[graph.backward_index["logits"]] = True
        owners = _backward_of_forward(graph)
        for _ in range(min(top_n, int(mask.sum()))):
            cand = torch.where(connected[None, :] & ~keep, s, torch.full_like(s, -float("inf")))
            best = int(torch.argmax(cand))
            f, b = divmod(best, graph.n_backward)
            if cand[f, b] == -float("inf"):
                break
            keep[f, b] = True
            connected[owners[f]] = True
    elif top_n is not None:
        k = min(top_n, int(mask.sum()))
        if k > 0:
            idx = torch.topk(s.flatten(), k).indices
            keep.view(-1)[idx] = True
    elif threshold is not None:
        keep = mask & (s >= threshold)
    else:
        raise ValueError("Choose edges with top_n=..., threshold=... or greedy=True with top_n.")
    return prune(keep & mask, graph)


def _backward_of_forward(graph: Graph) -> list[list[int]]:
    """For each forward node, the backward nodes through which it reads (its inputs)."""
    out: list[list[int]] = [[] for _ in range(graph.n_forward)]
    for f, name in enumerate(graph.forward_names):
        node = parse_node(name)
        if node.kind == "head":
            out[f] = graph.head_readers(node.layer, node.head)
        elif node.kind == "mlp":
            out[f] = [graph.backward_index[name]]
    return out


def prune(keep: Bool[torch.Tensor, "n_forward n_backward"], graph: Graph) -> Bool[torch.Tensor, "n_forward n_backward"]:
    """Drop edges that cannot reach ``logits`` or are not reached from ``input`` (iterate to a fixpoint)."""
    keep = keep.clone()
    inputs_of = _backward_of_forward(graph)
    logits = graph.backward_index["logits"]
    while True:
        before = int(keep.sum())
        reached = torch.zeros(graph.n_forward, dtype=torch.bool)
        reached[0] = True
        for f in range(1, graph.n_forward):  # forward order is topological
            if inputs_of[f]:
                reached[f] = bool((keep[:, inputs_of[f]] & reached[:, None]).any())
        alive = torch.zeros(graph.n_backward, dtype=torch.bool)
        alive[logits] = True
        for f in reversed(range(graph.n_forward)):
            if inputs_of[f] and bool(keep[f][alive].any()):
                alive[inputs_of[f]] = True
        keep &= reached[:, None] & alive[None, :]
        if int(keep.sum()) == before:
            return keep


@dataclass
class Circuit:
    """A set of edges with scores, plus what made them."""

    graph: Graph
    scores: Float[torch.Tensor, "n_forward n_backward"]
    edges: Bool[torch.Tensor, "n_forward n_backward"]
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_attribution(
        cls, result: AttributionResult, top_n: int | None = None, threshold: float | None = None,
        absolute: bool = True, greedy: bool = False, metadata: dict | None = None,
    ) -> Circuit:
        """Select a circuit from attribution scores (see :func:`select_edges`)."""
        edges = select_edges(result.scores, result.graph, top_n, threshold, absolute, greedy)
        meta = {"attribution": result.config.to_dict(), "n_samples": result.n_samples,
                "clean_metric": result.clean_metric, "corrupted_metric": result.corrupted_metric,
                "selection": {"top_n": top_n, "threshold": threshold, "absolute": absolute, "greedy": greedy}}
        meta.update(metadata or {})
        return cls(result.graph, result.scores, edges, meta)

    @property
    def n_edges(self) -> int:
        """Edges in the circuit."""
        return int(self.edges.sum())

    @property
    def nodes(self) -> list[str]:
        """Forward nodes with a kept outgoing edge, plus ``logits`` when reached."""
        g = self.graph
        names = [g.forward_names[i] for i in self.edges.any(dim=1).nonzero().flatten().tolist()]
        return names + (["logits"] if bool(self.edges[:, g.backward_index["logits"]].any()) else [])

    def to_dataframe(self, all_edges: bool = False) -> pd.DataFrame:
        """One row per edge: source, target, score, in_circuit (only circuit edges by default)."""
        g = self.graph
        sel = g.edge_mask if all_edges else self.edges
        f, b = sel.nonzero(as_tuple=True)
        df = pd.DataFrame({
            "source": [g.forward_names[i] for i in f.tolist()],
            "target": [g.backward_names[j] for j in b.tolist()],
            "score": self.scores[f, b].tolist(),
            "in_circuit": self.edges[f, b].tolist(),
        })
        return df.sort_values("score", key=np.abs, ascending=False, ignore_index=True)

    def module_importance(self, within_circuit: bool = False, absolute: bool = True) -> dict[str, float]:
        """Importance of every head ``a{L}.h{H}`` and MLP ``m{L}`` (see module docstring)."""
        g = self.graph
        s = self.scores.abs() if absolute else self.scores
        s = s * (self.edges if within_circuit else g.edge_mask)
        out_sum = s.sum(1)
        in_sum = s.sum(0)
        imp = {}
        for f, name in enumerate(g.forward_names):
            if name == "input":
                continue
            total = float(out_sum[f])
            node = parse_node(name)
            if node.kind == "head":
                q, k, v = g.head_readers(node.layer, node.head)
                total += float(in_sum[q]) + (float(in_sum[k]) + float(in_sum[v])) / g.group_size
            else:
                total += float(in_sum[g.backward_index[name]])
            imp[name] = total
        return imp

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` (graph, metadata, edge list) and ``<path>.safetensors`` (tensors)."""
        p = Path(path)
        p = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
        st = p.with_name(p.name + ".safetensors")
        js = p.with_name(p.name + ".json")
        tensors = {"scores": self.scores.contiguous().float(), "edges": self.edges.contiguous().to(torch.uint8)}
        atomic_write(st, lambda tmp: save_file(tensors, str(tmp)))
        atomic_write_json(js, {"format": "recircuit.circuit/1", "graph": self.graph.to_dict(),
                               "n_edges": self.n_edges, "nodes": self.nodes, "metadata": self.metadata,
                               "tensors": st.name})
        return js, st

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """Load a circuit written by :meth:`save` (either file name, or the stem)."""
        p = Path(path)
        p = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
        js = p.with_name(p.name + ".json")
        meta = json.loads(js.read_text())
        if meta.get("format") != "recircuit.circuit/1":
            raise ValueError(f"{js} is not a recircuit circuit file (format {meta.get('format')!r}).")
        t = load_file(str(js.with_name(meta["tensors"])))
        g = Graph(**meta["graph"])
        if tuple(t["scores"].shape) != (g.n_forward, g.n_backward):
            raise ValueError(f"{js}: tensor shape {tuple(t['scores'].shape)} does not match the graph {g.to_dict()}.")
        return cls(g, t["scores"], t["edges"].bool(), meta["metadata"])
