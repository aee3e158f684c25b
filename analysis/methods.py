"""The methods of a recompute study, one row each (docs/method.md#the-recompute-policy):
the policy's forms and the baselines it is compared with. Every run, JSON record, table
and figure names its method by the row's ``name``."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.registry import Registry

__all__ = ["Method", "METHODS", "GUIDED", "RANDOM", "LOCAL_ORACLE", "UNIFORM_LOW", "UNIFORM_HIGH", "STATIC",
           "MULTI_LEVEL", "LAMP", "GUIDED_RANKED", "method_names"]


@dataclass(frozen=True)
class Method:
    """A method: its name, what it does, whether it is matched to another run's
    recompute counts (``matched``) or runs without a tolerance (``uniform``), whether it
    exists for graphs only (``graphs_only``: it needs attention-score sites or ranks
    graph sites), and the line style of its figures."""

    name: str
    description: str
    matched: bool = False
    uniform: bool = False
    style: dict = field(default_factory=dict, compare=False, hash=False)
    graphs_only: bool = False


METHODS: Registry[Method] = Registry("method")
for _row in (
    Method("guided", "Algorithm 1: components whose score exceeds tau are recomputed in high",
           style=dict(color="#1f77b4", marker="o", linestyle="-")),
    Method("random", "as many components as the run it is matched to (guided, or LAMP on a graph) per layer (site) "
                     "and sample, chosen uniformly at random (seeded)",
           matched=True, style=dict(color="#7f7f7f", marker="s", linestyle="--")),
    Method("local-oracle", "as many components as the run it is matched to per layer (site) and sample, those with "
                           "the largest local error of this layer's output sigma(ŷ) against sigma(ỹ) (on a graph: of the "
                           "site's sum against the exact sum) at the same computed input (it knows the exact value of "
                           "one layer, not of the network)",
           matched=True, style=dict(color="#2ca02c", marker="^", linestyle=":")),
    Method("static", "per-neuron formats fixed on a calibration set, no run-time estimation",
           style=dict(color="#9467bd", marker="v", linestyle="-.")),
    Method("multi-level", "each component in the cheapest format F_j with u_F s <= tau",
           style=dict(color="#8c564b", marker="P", linestyle="-.")),
    Method("uniform-low", "every component in low", uniform=True,
           style=dict(color="#d62728", marker="X", linestyle="none", markersize=10)),
    Method("uniform-high", "every component in high", uniform=True,
           style=dict(color="#000000", marker="*", linestyle="none", markersize=12)),
    Method("lamp", "LAMP (Budzinskiy et al.) on a graph: at attention-score sites (consumed by a Softmax) the "
                   "scores s_j with 2 a_j (1 - a_j) |s_j| > tau (criterion lamp-relaxed: |s_j| e^s_j > tau max_k "
                   "|s_k| e^s_k) are recomputed; every other site stays low (its forced components aside)",
           style=dict(color="#ff7f0e", marker="D", linestyle="-"), graphs_only=True),
    Method("guided-ranked", "as many components as the run it is matched to (a LAMP run) per site and sample, "
                            "those of largest guided score (the guided criterion's ranking at that budget)",
           matched=True, style=dict(color="#17becf", marker="o", linestyle="--"), graphs_only=True),
):
    METHODS.add(_row.name, _row)

(GUIDED, RANDOM, LOCAL_ORACLE, STATIC, MULTI_LEVEL, UNIFORM_LOW, UNIFORM_HIGH, LAMP,
 GUIDED_RANKED) = METHODS.names()


def method_names() -> list[str]:
    return METHODS.names()
