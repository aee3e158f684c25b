"""The methods of a recompute study, one row each (docs/method.md#the-recompute-policy):
the policy's forms and the baselines it is compared with. Every run, JSON record, table
and figure names its method by the row's ``name``."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.registry import Registry

__all__ = ["Method", "METHODS", "GUIDED", "RANDOM", "LOCAL_ORACLE", "UNIFORM_LOW", "UNIFORM_HIGH", "STATIC",
           "MULTI_LEVEL", "method_names"]


@dataclass(frozen=True)
class Method:
    """A method: its name, what it does, whether it is matched to a guided run's
    recompute counts (``matched``) or runs without a tolerance (``uniform``), and the
    line style of its figures."""

    name: str
    description: str
    matched: bool = False
    uniform: bool = False
    style: dict = field(default_factory=dict, compare=False, hash=False)


METHODS: Registry[Method] = Registry("method")
for _row in (
    Method("guided", "Algorithm 1: components whose score exceeds tau are recomputed in high",
           style=dict(color="#1f77b4", marker="o", linestyle="-")),
    Method("random", "as many components as the guided run per layer and sample, chosen uniformly at random (seeded)",
           matched=True, style=dict(color="#7f7f7f", marker="s", linestyle="--")),
    Method("local-oracle", "as many components as the guided run per layer and sample, those with the largest local "
                           "error of this layer's output sigma(ŷ) against sigma(ỹ) at the same computed input (it "
                           "knows the exact value of one layer, not of the network)",
           matched=True, style=dict(color="#2ca02c", marker="^", linestyle=":")),
    Method("static", "per-neuron formats fixed on a calibration set, no run-time estimation",
           style=dict(color="#9467bd", marker="v", linestyle="-.")),
    Method("multi-level", "each component in the cheapest format F_j with u_F s <= tau",
           style=dict(color="#8c564b", marker="P", linestyle="-.")),
    Method("uniform-low", "every component in low", uniform=True,
           style=dict(color="#d62728", marker="X", linestyle="none", markersize=10)),
    Method("uniform-high", "every component in high", uniform=True,
           style=dict(color="#000000", marker="*", linestyle="none", markersize=12)),
):
    METHODS.add(_row.name, _row)

GUIDED, RANDOM, LOCAL_ORACLE, STATIC, MULTI_LEVEL, UNIFORM_LOW, UNIFORM_HIGH = METHODS.names()


def method_names() -> list[str]:
    return METHODS.names()
