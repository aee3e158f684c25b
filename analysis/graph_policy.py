"""The recompute policy at every accumulation site of a graph (docs/method.md#the-policy-on-graphs):
Algorithm 1 generalised, its baselines, and LAMP's rule for attention scores.

The mixed pass is an arithmetic of the one graph engine (:class:`MixedArithmetic`, an
``Emulated``): at every site, with the site's computed operands x̂, ŵ (per group for an
activation x activation product),

1. the low pass ŷ = acc_L(x̂ ŵ + b) (``emulator.linear.linear``, as ``Emulated`` sums);
2. a *selector* decides which components to recompute (:class:`Selector` rows below):
   the guided one scores each component by its estimated condition number times the
   sensitivity of what consumes it (``analysis.consumers``),
   ``kappa``: s_i = acc_L(|x̂||ŵ| + |b|)_i / |ŷ_i| · g_i (one more low pass), or
   ``kappa-prime``: s_i = g_i / |ŷ_i|, or ``kappa-holder`` / ``kappa-blocked:B`` with a
   certified upper bound on |x̂||ŵ| + |b| (``analysis.estimates``; at an activation x
   activation site the norms of ŵ are charged too), and recomputes s_i > tau; the forced components
   (overflowed, not finite, ŷ_i = 0) and undefined scores are recomputed whatever the
   rule, as for an MLP; instead of tau, a budget or a target error on the predicted error
   u_L s_i, at the granularity of components, output channels or tiles of the site's
   (rows x outputs) matrix (``analysis.selection``);
3. the high pass is evaluated at the same operands and the selected components taken from
   it (the whole pass is computed, only the selected components are charged).

Low and high reach each site as a plan's default does
(``emulator.graph.arithmetic.default_at``); a site the low spec leaves to the CUDA cores
(a plain sum under a hardware low spec) runs there in both passes, and a site whose two
specs agree is summed once, with nothing to choose. A mean's division is rounded in the format that summed each component. Storage rounding
and everything that is not a sum are as in ``Emulated``. The run records, per site, the
format of every component, the inner products computed in each format and their length
n (an im2col row C_in kh kw for a convolution, d_head for Q K^T, the row for a softmax
denominator), which the cost model charges n c(F) each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping, Sequence

import numpy as np

from emulator.accumulation import Accumulation
from emulator.graph import Graph, forward
from emulator.graph.arithmetic import Emulated, Site, SiteRecord, contraction_shapes
from emulator.graph.math import FLOAT64
from emulator.reference import exact_linear
from emulator.storage import parse_storage

from .consumers import LAMP_FORMS, GraphConsumers, SiteView
from .cost import Cost, CostModel, LayerWork, get_cost_model, run_cost
from .emulation import model_feeds
from .estimates import ESTIMATE_FORMAT, LOW_PASS, Estimate
from .methods import GUIDED, GUIDED_RANKED, LAMP, LOCAL_ORACLE, RANDOM, UNIFORM_HIGH, UNIFORM_LOW
from .mixed import Passes, _digest, _frozen, format_list, take_first
from .criteria import ORACLE_ERRORS, PolicyError, check_tau, forced, get_criterion, select, sensitivity_scores
from .selection import Rule, make_rule
from .selection import choose as choose_units

__all__ = [
    "MixedArithmetic", "SitePasses", "SiteState", "SiteChoice", "GraphMixedRun", "Selector", "mixed_graph_forward",
    "recompute_graph", "lamp_graph", "uniform_graph", "random_graph", "local_oracle_graph", "guided_ranked_graph",
    "lamp_form_names",
]


class SitePasses(Passes):
    """Passes of a site at its computed operands, computed on demand and kept in the LRU
    cache of :class:`~analysis.mixed.Passes`, keyed by (kind, arithmetic, digest of the
    operands), so runs that share a site's operands (every run of a sweep shares the
    first site's) compute it once."""

    def _groups(self, kind: str, spec: str, x, w, bias, batched: bool, compute: Callable) -> tuple:
        def run():
            if not batched:
                return tuple(_frozen(np.asarray(a)) for a in compute(x, w))
            parts = [compute(x[g], w[g]) for g in range(x.shape[0])]
            return tuple(_frozen(np.stack([p[k] for p in parts])) for k in range(len(parts[0])))

        return self._cached((kind, spec, _digest(x, w, bias)), run)

    def sums(self, arith: Emulated, acc: Accumulation, x, w, bias, batched: bool) -> tuple[np.ndarray, np.ndarray]:
        """(acc(x ŵ + b), overflow mask), summed as ``Emulated`` sums a site."""
        return self._groups("sums", acc.spec, x, w, bias, batched,
                            lambda xg, wg: Emulated._sum(arith, acc, xg, wg, bias))

    def magnitude(self, arith: Emulated, acc: Accumulation, x, w, bias, batched: bool,
                  estimate: Estimate = LOW_PASS) -> np.ndarray:
        """acc(|x̂||ŵ| + |b|), +inf where that sum overflowed; a certified ``estimate``:
        its upper bound on |x̂||ŵ| + |b| instead (``analysis.estimates``)."""
        if estimate.certified:
            return self._groups(f"estimate:{estimate.name}", "", x, w, bias, batched,
                                lambda xg, wg: (estimate.bound(xg, wg, bias),))[0]
        b = None if bias is None else np.abs(bias)

        def compute(xg, wg):
            a, ovf = Emulated._sum(arith, acc, np.abs(xg), np.abs(wg), b)
            return (np.where(ovf, np.inf, a),)

        return self._groups("magnitude", acc.spec, x, w, bias, batched, compute)[0]

    def exact_sums(self, x, w, bias, batched: bool, precision: int) -> np.ndarray:
        """RN(exact x̂ ŵ + b) at the computed operands (NaN on rows with a non-finite operand)."""
        def compute(xg, wg):
            finite = np.isfinite(xg).all(axis=1)
            exact = np.asarray(exact_linear(np.where(finite[:, None], xg, 0.0), wg, bias, precision), dtype=np.float64)
            return (np.where(finite[:, None] & np.isfinite(wg).all(axis=1)[None, :], exact, np.nan),)

        return self._groups(f"exact:{precision}", "exact", x, w, bias, batched, compute)[0]


class SiteState:
    """One site of one run while it is decided: operands, the low pass and, on demand,
    the forced components, an estimate of |x̂||ŵ| + |b|, the consumers' view and the exact
    sums; ``low_passes`` counts the low-precision passes taken (the low pass, and the
    magnitude pass once a selector asks for it), ``steps`` a certified estimate's
    operations by format (with, at an activation x activation site, the norms of ŵ,
    which are not weights known in advance); ``low_spec`` the site's low accumulation."""

    def __init__(self, arith: "MixedArithmetic", site: Site, x, w, bias, batched: bool, low: Accumulation):
        self.arith, self.site, self.x, self.w, self.bias, self.batched = arith, site, x, w, bias, batched
        self.low_spec = low
        self.low_passes = 1
        self.steps: dict[str, int] = {}
        self._estimates: dict[str, np.ndarray] = {}

    @cached_property
    def low(self) -> tuple[np.ndarray, np.ndarray]:
        a = self.arith
        return a.passes.sums(a, self.low_spec, self.x, self.w, self.bias, self.batched)

    @property
    def y(self) -> np.ndarray:
        return self.low[0]

    @cached_property
    def forced(self) -> np.ndarray:
        return forced(*self.low)

    def magnitude(self, estimate: Estimate = LOW_PASS) -> np.ndarray:
        """``estimate`` of |x̂||ŵ| + |b| (charged once per run and site)."""
        if estimate.name not in self._estimates:
            a = self.arith
            self.low_passes += estimate.low_passes
            if estimate.certified:
                groups = self.x.shape[0] if self.batched else 1
                rows, n, m = self.x.shape[-2], self.x.shape[-1], self.w.shape[-2]
                count = groups * (rows * estimate.steps(n, m) + (estimate.weight_steps(n, m) if self.batched else 0))
                self.steps[ESTIMATE_FORMAT] = self.steps.get(ESTIMATE_FORMAT, 0) + count
            self._estimates[estimate.name] = a.passes.magnitude(a, self.low_spec, self.x, self.w, self.bias,
                                                                self.batched, estimate)
        return self._estimates[estimate.name]

    @cached_property
    def view(self) -> SiteView:
        a = self.arith
        return SiteView(a.consumers.sites[self.site.name], a.graph, self.y, a.lookup, a.storage)

    def exact(self, precision: int) -> np.ndarray:
        return self.arith.passes.exact_sums(self.x, self.w, self.bias, self.batched, precision)

    def blocks(self, a: np.ndarray) -> np.ndarray:
        """``a`` (the shape of the site's sums) as one row per sample: the sums of a batch-first
        graph are sample-major, so their C order splits into N equal consecutive blocks."""
        n = self.arith.samples
        return a.reshape(n, -1) if a.size % n == 0 else a.reshape(1, -1)


@dataclass(frozen=True)
class Selector:
    """How a method chooses the recomputed components of a site: ``choose(state)`` -> a
    bool mask (shape of ŷ), computing from ``state`` what it needs (each low-precision
    pass it takes is charged for every component); ``uses_low`` False for uniform high;
    ``selection`` the budgeted or granular rule (``Rule.describe``), None for a plain
    threshold."""

    method: str
    choose: Callable[[SiteState], np.ndarray]
    uses_low: bool = True
    criterion: "str | None" = None
    tau: "float | None" = None
    selection: "dict | None" = None


def guided_scores(state: SiteState, criterion: str) -> np.ndarray:
    """The guided criterion's score of each component (NaN where undefined)."""
    crit = get_criterion(criterion)
    magnitude = state.magnitude(crit.estimate) if crit.needs_magnitude else None
    return sensitivity_scores(state.y, state.view.sensitivity(), crit, magnitude)


def _guided(criterion: str, rule: Rule) -> Selector:
    """Algorithm 1's threshold, or ``rule``'s budget / target at its granularity, on the
    guided scores (predicted error u_L s_i)."""
    crit = get_criterion(criterion)

    def choose(state: SiteState) -> np.ndarray:
        score = guided_scores(state, crit.name)
        if rule.plain:
            return select(score, state.forced, rule.tau)
        return choose_units(score, state.forced, rule, state.arith.low.fmt.u)

    return Selector(GUIDED, choose, criterion=crit.name, tau=rule.tau,
                    selection=None if rule.plain else rule.describe())


def lamp_form_names() -> list[str]:
    return list(LAMP_FORMS)


def _lamp(form: str, tau: float) -> Selector:
    if form not in LAMP_FORMS:
        raise PolicyError(f"LAMP criterion {form!r}: must be one of {', '.join(LAMP_FORMS)}.")

    def choose(state: SiteState) -> np.ndarray:
        if not state.arith.consumers.sites[state.site.name].attention:
            return state.forced
        return select(state.view.lamp(form), state.forced, tau)

    return Selector(LAMP, choose, criterion=form, tau=tau)


def _matched(method: str, like: "GraphMixedRun", ranking: Callable[[SiteState], np.ndarray],
             lazy: bool = False) -> Selector:
    """The forced components plus the best-ranked others (lowest key first), as many per
    site and sample as ``like`` recomputed there; ``lazy``: no ranking where the forced
    components fill the budget (the random ranking draws at every site, so that its draws
    do not depend on the budgets)."""
    choices = like.choices
    samples = like.logits.shape[0]

    def choose(state: SiteState) -> np.ndarray:
        name = state.site.name
        if samples != state.arith.samples:
            raise PolicyError(f"{method}: the run to match has {samples} samples but the input has "
                              f"{state.arith.samples}.")
        if name not in choices or choices[name].shape != state.y.shape:
            raise PolicyError(f"{method}: site {name!r} of shape {state.y.shape} is not in the run to match "
                              f"(or has another shape there).")
        budget = state.blocks(choices[name] > 0).sum(axis=1)
        must = state.blocks(state.forced)
        if lazy and np.all(budget <= must.sum(axis=1)):
            return state.forced
        mask = must | take_first(state.blocks(ranking(state)), budget, first=must)
        return mask.reshape(state.y.shape)

    return Selector(method, choose, criterion=like.criterion, tau=like.tau, selection=like.selection)


@dataclass(frozen=True)
class SiteChoice:
    """What a run did at one site: ``choice`` (the shape of the site's sums on the batch:
    (rows, m), or (groups, rows, m)) the index of the format of every component, ``work``
    the inner products computed under each accumulation, each of length ``n``, ``steps``
    a certified estimate's operations by format, ``formats`` the site's (low, high)
    accumulations (the run's, but where a hardware low spec leaves a plain sum to fp32 in
    both; the site's high is the reference of its cost)."""

    site: Site
    n: int
    groups: int
    choice: np.ndarray
    work: Mapping[Accumulation, int]
    steps: Mapping[str, int] = field(default_factory=dict)
    formats: tuple[Accumulation, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.choice.shape)


class MixedArithmetic(Emulated):
    """The mixed pass as an arithmetic (see the module docstring): sums in ``formats``
    (low, high) chosen per component by ``selector``; ``consumers`` the graph's consumer
    analysis, ``passes`` the cache of site passes, ``samples`` the batch size. With
    ``record``, each site's operands and mixed sums go to ``records`` (``SiteRecord`` with
    ``acc`` None: the formats are per component, in ``sites``)."""

    name = "mixed"

    def __init__(self, formats: Sequence[Accumulation], selector: Selector, consumers: GraphConsumers,
                 passes: SitePasses, storage=None, samples: int = 1, *, record: bool = False):
        super().__init__(formats[0], storage, record=record)
        self.low, self.high = formats[0], formats[-1]
        self._high = Emulated(self.high)
        self.selector = selector
        self.consumers = consumers
        self.passes = passes
        self.samples = samples
        self.sites: list[SiteChoice] = []
        self._masks: dict[str, np.ndarray] = {}
        self._values: dict = {}
        self._constants: dict = {}
        self.graph: "Graph | None" = None

    def begin(self, graph, values: dict) -> None:
        self.graph, self._values = graph, values
        self._constants = self.consumers.constants(values, self.storage)

    def lookup(self, name: str):
        """A tensor's value: computed by the engine already, or a constant; else None."""
        value = self._values.get(name)
        return self._constants.get(name) if value is None else value

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        x, w, bias, lead = contraction_shapes(FLOAT64, site, np.asarray(x, dtype=np.float64),
                                              np.asarray(w, dtype=np.float64),
                                              None if bias is None else np.asarray(bias, dtype=np.float64), batched)
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        low = self.spec(site)
        high = self._high.spec(site) if low == self.low else low  # a plain sum under hardware low: CUDA cores
        state = SiteState(self, site, x, w, bias, batched, low)
        sel = self.selector
        if low == high and sel.uses_low:  # nothing to choose (a plain sum under hardware specs)
            mask = np.zeros((*x.shape[:-1], w.shape[-2]), dtype=bool)
        else:
            mask = np.asarray(sel.choose(state), dtype=bool)
        work: dict = {}
        if sel.uses_low:
            y, ovf = state.low
            work[low] = state.low_passes * y.size
        if mask.any() or not sel.uses_low:
            y_high, ovf_high = self.passes.sums(self, high, x, w, bias, batched)
            y, ovf = (np.where(mask, y_high, y), np.where(mask, ovf_high, ovf)) if sel.uses_low else (y_high, ovf_high)
            work[high] = int(mask.sum())
        self._masks[site.name] = mask
        if self.record:
            self.records.append(SiteRecord(site, None, x, w, bias, y, ovf, batched))
        self.sites.append(SiteChoice(site, int(x.shape[-1]), int(x.shape[0]) if batched else 1,
                                     _frozen(mask.astype(np.int8)), work, dict(state.steps), (low, high)))
        self.overflow[site.name] = ovf.reshape(*lead, ovf.shape[-1])
        return y.reshape(*lead, y.shape[-1])

    def divide(self, site: Site, total, count):
        """The mean's division in the format of each component's sum."""
        mask = self._masks.get(site.name)
        if mask is not None and mask.all():
            return self._high.divide(site, total, count)
        low = super().divide(site, total, count)
        if mask is None or not mask.any():
            return low
        return np.where(mask.reshape(np.shape(total)), self._high.divide(site, total, count), low)


@dataclass(frozen=True)
class GraphMixedRun:
    """A mixed-precision pass of a graph (the graph counterpart of ``MixedRun``): the
    graph's ``outputs`` by name, ``logits`` its first output, per site its
    :class:`SiteChoice` (``choices``, ``masks``, ``site_fraction`` by site name), the
    overall recomputed share ``fraction`` and the ``cost`` against uniform high;
    ``selection`` the budgeted or granular rule (None for a plain threshold);
    ``records`` each site's operands and mixed sums when the pass recorded them."""

    method: str
    criterion: "str | None"
    tau: "float | None"
    formats: tuple[Accumulation, ...]
    outputs: Mapping[str, np.ndarray]
    sites: tuple[SiteChoice, ...]
    cost: Cost
    selection: "dict | None" = None
    records: tuple[SiteRecord, ...] = field(default=(), repr=False, compare=False)

    @property
    def logits(self) -> np.ndarray:
        return next(iter(self.outputs.values()))

    @property
    def choices(self) -> dict[str, np.ndarray]:
        return {s.site.name: s.choice for s in self.sites}

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {s.site.name: s.choice > 0 for s in self.sites}

    @property
    def site_fraction(self) -> dict[str, float]:
        """Share of each site's components not left in the low format."""
        return {s.site.name: float(np.mean(s.choice > 0)) for s in self.sites}

    @property
    def fraction(self) -> float:
        """Share of all components of all sites not left in low."""
        return float(sum(int(np.count_nonzero(s.choice)) for s in self.sites) / sum(s.choice.size for s in self.sites))

    def format_fraction(self) -> dict[str, dict[str, float]]:
        return {s.site.name: {f.spec: float(np.mean(s.choice == j)) for j, f in enumerate(self.formats)}
                for s in self.sites}


def mixed_graph_forward(graph: Graph, data, formats: Sequence, selector: Selector, *, storage=None,
                        cost: "CostModel | str" = "bits", passes: "SitePasses | None" = None,
                        consumers: "GraphConsumers | None" = None, record: bool = False) -> GraphMixedRun:
    """One forward pass of ``graph`` on ``data`` (a dict of its inputs, a Dataset, or an
    array for a single input) under :class:`MixedArithmetic` with ``selector``; weights and
    inputs rounded to ``storage`` as in ``emulator.graph.forward``; ``record`` keeps each
    site's operands. The samples go through in one batch: a site's budget, its row and tile
    units and a matched run's counts are those of the whole batch."""
    model = get_cost_model(cost)
    rows = format_list(formats)
    st = parse_storage(storage)
    feeds = graph.check_feeds(model_feeds(graph, graph, data))
    samples = next(iter(feeds.values())).shape[0]
    passes = passes if isinstance(passes, SitePasses) else SitePasses()
    arith = MixedArithmetic(rows, selector, consumers or GraphConsumers.of(graph), passes, st, samples, record=record)
    run = forward(graph, feeds, arith, st, batch_size=samples)
    sites = tuple(arith.sites)
    work = [LayerWork(s.n, s.work, s.steps) for s in sites]
    costs = run_cost(work, [s.choice.size for s in sites], 1, [s.formats[-1] for s in sites], model)
    outputs = {k: _frozen(np.array(v, dtype=np.float64)) for k, v in run.outputs.items()}
    return GraphMixedRun(selector.method, selector.criterion, selector.tau, rows, outputs, sites, costs,
                         selector.selection, tuple(arith.records))


def recompute_graph(graph: Graph, data, low, high, tau: "float | None", criterion: str = "kappa", storage=None, *,
                    budget: "float | None" = None, target_error: "float | None" = None,
                    granularity: str = "component", tile: "str | tuple[int, int]" = (16, 16), **common):
    """Algorithm 1 at every site of ``graph`` (the module docstring): a threshold ``tau``,
    or (``tau`` None) a ``budget`` and / or ``target_error`` per site, at ``granularity``
    (``analysis.selection``); ``common``: the keywords of :func:`mixed_graph_forward`
    (cost, passes, consumers, record)."""
    rule = make_rule(tau, budget, target_error, granularity, tile)
    return mixed_graph_forward(graph, data, (low, high), _guided(criterion, rule), storage=storage, **common)


def lamp_graph(graph: Graph, data, low, high, tau: float, form: str = "lamp-strict", storage=None, **common):
    """LAMP: at attention-score sites recompute the scores whose LAMP score (``form``:
    lamp-strict 2 a_j (1 - a_j) |s_j|, lamp-relaxed |s_j| e^s_j / max_k |s_k| e^s_k)
    exceeds tau; every other site stays low (forced components aside)."""
    return mixed_graph_forward(graph, data, (low, high), _lamp(form, check_tau(tau)), storage=storage, **common)


def uniform_graph(graph: Graph, data, low, high, level: int, storage=None, **common) -> GraphMixedRun:
    """Every component in ``low`` (level 0, nothing recomputed) or in ``high`` only (level 1)."""
    if level == 0:
        selector = Selector(UNIFORM_LOW, lambda s: np.zeros(s.y.shape, dtype=bool))
    else:
        selector = Selector(UNIFORM_HIGH, lambda s: np.ones(s.x.shape[:-1] + (s.w.shape[-2],), dtype=bool),
                            uses_low=False)
    return mixed_graph_forward(graph, data, (low, high), selector, storage=storage, **common)


def _matched_run(graph: Graph, data, like: GraphMixedRun, method: str, ranking: Callable, storage, common,
                 lazy: bool = False):
    return mixed_graph_forward(graph, data, like.formats, _matched(method, like, ranking, lazy), storage=storage,
                               **common)


def random_graph(graph: Graph, data, like: GraphMixedRun, seed: int = 0, storage=None, **common) -> GraphMixedRun:
    """The forced components plus uniformly random others (one ``default_rng(seed)``
    draw of the site's shape per site, in site order), as many per site and sample as
    in ``like``."""
    rng = np.random.default_rng(seed)
    return _matched_run(graph, data, like, RANDOM, lambda s: rng.random(s.y.shape), storage, common)


def local_oracle_graph(graph: Graph, data, like: GraphMixedRun, error: str = "relative", storage=None, *,
                       precision: int = 113, **common) -> GraphMixedRun:
    """The forced components plus those whose sum has the largest true local error
    (``error``: relative or absolute) against the exact sum of the same computed
    operands, as many per site and sample as in ``like``."""
    measure = ORACLE_ERRORS.get(error).measure
    return _matched_run(graph, data, like, LOCAL_ORACLE, lambda s: -measure(s.y, s.exact(precision)), storage,
                        common, lazy=True)


def guided_ranked_graph(graph: Graph, data, like: GraphMixedRun, criterion: str = "kappa", storage=None,
                        **common) -> GraphMixedRun:
    """The forced components plus those of largest guided score (undefined scores first),
    as many per site and sample as in ``like`` (a LAMP run: the guided ranking at LAMP's
    budget). It pays the guided estimation passes at the sites it ranks."""
    crit = get_criterion(criterion)

    def ranking(state: SiteState) -> np.ndarray:
        score = guided_scores(state, crit.name)
        return -np.where(np.isnan(score), np.inf, score)

    return _matched_run(graph, data, like, GUIDED_RANKED, ranking, storage, common, lazy=True)

