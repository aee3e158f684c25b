"""Certified predictions (docs/method.md#certified-predictions): for every sample, whether
the class predicted under an arithmetic provably is the class of the exact network.

The emulated logits ẑ and a rigorous bound Δ >= |ẑ - z| on their distance to the exact
logits z give a :mod:`certificate <analysis.certificates>` per sample. Δ is

* for an MLP, the global bound on the last layer's pre-activation
  (``analysis.validation.layer_components(...).global_pre``), inf where the component's
  accumulation, or one upstream, overflowed or is not finite;
* for a graph, the radius of the logits' ball in the bound pass
  (``analysis.graph_bounds.GlobalBounds``); a sample one of whose sums overflowed is not
  certified (the overflow masks keep the batch axis leading, as every tensor of the
  engine does).

The exact pass decides whether a sample *flipped* (its computed class differs from the
exact one's); a certified sample that flips is a bug of the bound or of the emulator.

With ``until_certified`` the uncertified samples are recomputed in the ``high``
accumulation. On a graph, each uncertified sample is recomputed whole (every site in
high) and certified again. On an MLP, last layers first: stage k recomputes layers
k..L-1 in high from the low pass's computed input x̂_k, whose distance to the exact
input is the low pass's global bound D_k. A sample enters stage k > 0 only if it would
be certified were layers k..L-1 free of rounding errors (D_k propagated alone through
them at the low pass's values: the error inherited from layers 0..k-1 already too large,
recomputing layers k.. cannot help); the samples still uncertified go on to earlier
stages, down to stage 0 (the whole sample in high), which every sample left reaches. The
cost (``analysis.cost``) charges the low pass of every sample plus every stage's (on a
graph, every recomputed sample's) high inner products, against the whole run in uniform
high.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.errors import DataError, MixaccError
from emulator.graph import AccumulationPlan, Emulated, Graph
from emulator.graph.engine import batches, prepare, run_graph
from emulator.graph.exact import Exact, exact_values
from emulator.metrics import accuracy, flipped, predicted_class
from emulator.network import Network, layer_storage
from emulator.reference import exact_forward
from emulator.storage import parse_storage

from .bounds import global_bound, parse_bound
from .certificates import Certificates, certificates
from .cost import Cost, LayerWork, get_cost_model, run_cost
from .distributed import run_tasks
from .graph_bounds import GlobalBounds
from .graph_validation import GRAPH_BATCH, plan_description
from .tasks import model_task
from .validation import DEFAULT_BATCH, layer_components

__all__ = ["Certification", "CertifyPolicy", "Stage", "certify", "DEFAULT_HIGH"]

DEFAULT_HIGH = "fp32"
"""The accumulation uncertified samples are recomputed in by default."""

FLOAT64_SUMS = parse_accumulation("fp64")
"""What the cost charges a graph site the plan leaves in float64."""


@dataclass(frozen=True)
class Stage:
    """One stage of the policy: layers ``start``.. recomputed in high for ``samples``
    samples, of which ``certified`` became certified."""

    start: int
    samples: int
    certified: int

    def to_dict(self) -> dict:
        return {"start_layer": self.start, "samples": self.samples, "certified": self.certified}


@dataclass
class CertifyPolicy:
    """What :func:`certify` with ``until_certified`` did: the ``high`` spec, the stages,
    per sample the first layer recomputed (``recomputed_from``, -1 when certified in low)
    and the final certificates, flips and classes; ``cost`` against uniform high."""

    high: str
    stages: list
    recomputed_from: np.ndarray
    final: Certificates
    flipped: np.ndarray
    cost: Cost
    accuracy: "float | None" = None

    @property
    def certified_fraction(self) -> float:
        return float(np.mean(self.final.certified))

    @property
    def flip_rate(self) -> float:
        return float(np.mean(self.flipped))

    @property
    def certified_flips(self) -> int:
        return int(np.count_nonzero(self.final.certified & self.flipped))

    def to_dict(self) -> dict:
        return {"high": self.high, "stages": [s.to_dict() for s in self.stages],
                "certified_fraction": self.certified_fraction, "uncertified": int(np.count_nonzero(~self.final.certified)),
                "accuracy": self.accuracy, "flip_rate": self.flip_rate, "certified_flips": self.certified_flips,
                "recomputed_samples": int(np.count_nonzero(self.recomputed_from >= 0)), "cost": self.cost.describe()}


@dataclass
class Certification:
    """What :func:`certify` found: per sample the certificate (``certificates``), whether
    it flipped against the exact pass and the exact class; the accuracies with labels;
    ``policy`` when ``until_certified`` ran."""

    model: str
    data: "str | None"
    accumulation: dict
    storage: "str | None"
    certificates: Certificates
    flipped: np.ndarray
    exact_class: np.ndarray
    accuracy: "float | None" = None
    exact_accuracy: "float | None" = None
    policy: "CertifyPolicy | None" = None
    extra: dict = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(self.flipped.shape[0])

    @property
    def certified(self) -> np.ndarray:
        return self.certificates.certified

    @property
    def certified_fraction(self) -> float:
        return float(np.mean(self.certified)) if self.samples else 0.0

    @property
    def flip_rate(self) -> float:
        return float(np.mean(self.flipped)) if self.samples else 0.0

    @property
    def certified_flips(self) -> int:
        """Certified samples that flipped: always 0 unless the bound or the emulator is wrong."""
        return int(np.count_nonzero(self.certified & self.flipped))

    def sample_records(self) -> list[dict]:
        c = self.certificates
        out = []
        for s in range(self.samples):
            record = {"index": s, "certified": bool(c.certified[s]), "flipped": bool(self.flipped[s]),
                      "margin": float(c.margin[s]), "bound": float(c.bound[s]), "predicted": int(c.predicted[s]),
                      "exact_class": int(self.exact_class[s]), "competitor": int(c.competitor[s])}
            if self.policy is not None:
                p = self.policy
                record.update({"recomputed_from": None if p.recomputed_from[s] < 0 else int(p.recomputed_from[s]),
                               "final_certified": bool(p.final.certified[s]), "final_flipped": bool(p.flipped[s]),
                               "final_margin": float(p.final.margin[s]), "final_bound": float(p.final.bound[s])})
            out.append(record)
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "accumulation": self.accumulation, "storage": self.storage,
                "certified_fraction": self.certified_fraction, "certified": int(np.count_nonzero(self.certified)),
                "accuracy": self.accuracy, "exact_accuracy": self.exact_accuracy, "flip_rate": self.flip_rate,
                "flips": int(np.count_nonzero(self.flipped)), "certified_flips": self.certified_flips,
                "policy": None if self.policy is None else self.policy.to_dict(), **self.extra,
                "samples": self.sample_records()}


def _concat(parts: list[Certificates]) -> Certificates:
    return Certificates(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Certificates)))


def _copy(cert: Certificates) -> Certificates:
    return Certificates(*(np.array(getattr(cert, f.name)) for f in dataclasses.fields(Certificates)))


def _scatter(into: Certificates, rows: np.ndarray, values: Certificates) -> None:
    """into[rows] = values, field by field (in place)."""
    for f in dataclasses.fields(Certificates):
        getattr(into, f.name)[rows] = getattr(values, f.name)


# ----------------------------------------------------------------------------------- MLPs


@dataclass
class _LowPass:
    """One batch of an MLP under the low accumulation: per layer its computed input, the
    bound on that input's distance to the exact one (None for the network input) and its
    computed pre-activation."""

    inputs: list
    input_bounds: list
    pre: list
    ref: object


def _radius(last) -> np.ndarray:
    """Δ of the logits: the global pre-activation bound where covered, inf elsewhere."""
    return np.where(last.covered & np.isfinite(last.global_pre), last.global_pre, np.inf)


def _mlp_batch(net: Network, rounded: Network, xb: np.ndarray, acc: Accumulation, spec, st, precision: int):
    """(certificates, exact logits, the low pass) of one batch."""
    run = net.forward(xb, acc=acc, storage=st, return_all=True)
    ref = exact_forward(rounded, run.input, precision)
    comps = list(layer_components(rounded, run, ref, acc, spec, st, precision))
    inputs = [run.input, *(c.z_hat for c in comps[:-1])]
    bounds = [None, *(np.where(c.global_covered, c.global_bound, np.inf) for c in comps[:-1])]
    return (certificates(run.preactivations[-1], _radius(comps[-1])), ref.preactivations[-1],
            _LowPass(inputs, bounds, [c.y_hat for c in comps], ref))


def _worth_recomputing(rounded: Network, low: _LowPass, start: int, st) -> np.ndarray:
    """Samples whose low logits would be certified if layers ``start``.. added no rounding
    error: D_start propagated alone (local bounds 0) through those layers at the low
    pass's pre-activations."""
    bound = low.input_bounds[start]
    for layer, pre in zip(rounded.layers[start:], low.pre[start:]):
        g = global_bound(pre, np.zeros(pre.shape), layer.weight, layer.activation, bound, st)
        bound = g.out
    return certificates(low.pre[-1], g.pre).certified


def _suffix_ref(ref, rows: np.ndarray, start: int):
    """The exact pass of the samples ``rows`` from layer ``start`` on."""
    lists = ("preactivations", "outputs", "pre_radius", "out_radius", "certified", "fallback")
    return dataclasses.replace(ref, **{name: [a[rows] for a in getattr(ref, name)[start:]] for name in lists},
                               mp_preactivations=None, mp_outputs=None, mp_pre_radius=None, mp_out_radius=None)


def _recompute(rounded: Network, low: _LowPass, rows: np.ndarray, start: int, high: Accumulation, spec, st,
               precision: int) -> Certificates:
    """Layers ``start``.. of the samples ``rows`` in high, from the low pass's computed
    input (and its bound), certified."""
    suffix = Network(rounded.layers[start:], rounded.name)
    run = suffix.forward(low.inputs[start][rows], acc=high, storage=st, return_all=True)
    bound = None if low.input_bounds[start] is None else low.input_bounds[start][rows]
    comps = list(layer_components(suffix, run, _suffix_ref(low.ref, rows, start), high, spec, st, precision,
                                  input_bound=bound))
    return certificates(run.preactivations[-1], _radius(comps[-1]))


def _until_certified(rounded: Network, low: _LowPass, cert: Certificates, high: Accumulation, spec, st,
                     precision: int, counts: np.ndarray, stages: dict, recomputed_from: np.ndarray) -> Certificates:
    """The policy on one batch: final certificates; ``counts[k]`` accumulates the samples
    whose layer k ran in high, ``stages[k]`` (samples, certified), ``recomputed_from``
    (this batch's slice) the first layer each sample recomputed."""
    final = _copy(cert)
    for start in range(len(rounded) - 1, -1, -1):
        wanted = ~final.certified
        if start > 0 and wanted.any():
            wanted &= _worth_recomputing(rounded, low, start, st)
        rows = np.flatnonzero(wanted)
        if rows.size == 0:
            continue
        again = _recompute(rounded, low, rows, start, high, spec, st, precision)
        _scatter(final, rows, again)
        recomputed_from[rows] = start
        counts[start:] += rows.size
        done, certified = stages.get(start, (0, 0))
        stages[start] = (done + rows.size, certified + int(np.count_nonzero(again.certified)))
    return final


@dataclass
class _MLPJob:
    """What every batch of an MLP's certification shares (scattered once to a cluster)."""

    net: Network
    rounded: Network
    acc: Accumulation
    spec: object
    st: object
    precision: int
    high: "Accumulation | None"


def _certify_mlp_batch(job: _MLPJob, xb: np.ndarray) -> tuple:
    """(certificates, exact logits, final certificates, samples per layer run in high,
    stages, first recomputed layer per sample) of one batch; the last four None without
    ``high``."""
    cert, exact_logits, low = _mlp_batch(job.net, job.rounded, xb, job.acc, job.spec, job.st, job.precision)
    if job.high is None:
        return cert, exact_logits, None, None, None, None
    counts, stages = np.zeros(len(job.rounded), dtype=np.int64), {}
    recomputed_from = np.full(xb.shape[0], -1, dtype=np.int64)
    final = _until_certified(job.rounded, low, cert, job.high, job.spec, job.st, job.precision, counts, stages,
                             recomputed_from)
    return cert, exact_logits, final, counts, stages, recomputed_from


def _certify_mlp(net: Network, x: np.ndarray, acc: Accumulation, spec, st, precision: int, batch_size: int,
                 high: "Accumulation | None", cost_model) -> tuple:
    rounded = net.with_storage(st)
    xs = net.check_input(x)
    job = _MLPJob(net, rounded, acc, spec, st, precision, high)
    items = [xs[start:start + batch_size] for start in range(0, xs.shape[0], batch_size)]
    results = run_tasks(_certify_mlp_batch, job, items, desc=f"certify {acc.spec}")
    parts, exact = [r[0] for r in results], [r[1] for r in results]
    policy = None
    if high is not None:
        counts = sum(r[3] for r in results)
        stages: dict = {}
        for r in results:
            for k, (done, certified) in r[4].items():
                before = stages.get(k, (0, 0))
                stages[k] = (before[0] + done, before[1] + certified)
        n = xs.shape[0]
        work = [LayerWork(layer.n_inputs, _counts({acc: n * layer.n_outputs, high: int(c) * layer.n_outputs}))
                for layer, c in zip(rounded.layers, counts)]
        cost = run_cost(work, [layer.n_outputs for layer in rounded.layers], n, high, cost_model)
        policy = CertifyPolicy(high.spec, [Stage(k, *stages[k]) for k in sorted(stages, reverse=True)],
                               np.concatenate([r[5] for r in results]), _concat([r[2] for r in results]),
                               np.zeros(0, dtype=bool), cost)
    return _concat(parts), np.concatenate(exact), policy


def _counts(pairs: dict) -> dict:
    """Inner-product counts by accumulation, summed where low and high are the same spec."""
    out: dict = {}
    for acc, count in pairs.items():
        out[acc] = out.get(acc, 0) + count
    return out


# --------------------------------------------------------------------------------- graphs


def _sample_overflow(overflow: dict, n: int) -> np.ndarray:
    """Samples of a batch of ``n`` one of whose sums overflowed: each site's mask has the
    batch axis leading (flattened with the other leading axes, sample-major); a mask whose
    rows are not a multiple of ``n`` marks every sample when it holds an overflow."""
    out = np.zeros(n, dtype=bool)
    for mask in overflow.values():
        mask = np.asarray(mask, dtype=bool)
        if mask.size % n == 0 and mask.ndim and mask.shape[0] % n == 0:
            out |= mask.reshape(n, -1).any(axis=1)
        elif mask.any():
            out[:] = True
    return out


def _graph_certificates(prepared: Graph, chunk: dict, plan: AccumulationPlan, spec, st, logits: str) -> tuple:
    """(certificates, site records) of one batch of a graph under ``plan``."""
    emulated = Emulated(plan, st, record=True)
    run = run_graph(prepared, chunk, emulated, keep=True)
    ball = run_graph(prepared, chunk, GlobalBounds(run.values, emulated.records, spec)).outputs[logits]
    z = np.asarray(run.outputs[logits], dtype=np.float64)
    n = z.shape[0]
    radius = GlobalBounds.radius(ball).reshape(n, -1)
    radius = np.where(_sample_overflow(emulated.overflow, n)[:, None], np.inf, radius)
    return certificates(z.reshape(n, -1), radius), emulated.records


def _site_work(records, n: int, recomputed: int, high: Accumulation, work: dict) -> None:
    """Adds one batch of ``n`` samples to ``work[(site, length)] = [components, counts by
    accumulation]``: every sample's sums in their low spec (float64 where the plan leaves
    a site out), ``recomputed`` samples' again in ``high`` (a site's length may change
    between batches: padded sequences)."""
    for rec in records:
        per_sample = rec.y.size // n
        entry = work.setdefault((rec.site.name, rec.x.shape[-1]), [0, {}])
        entry[0] += per_sample * n
        for acc, count in ((rec.acc or FLOAT64_SUMS, per_sample * n), (high, per_sample * recomputed)):
            if count:
                entry[1][acc] = entry[1].get(acc, 0) + count


@dataclass
class _GraphJob:
    """What every batch of a graph's certification shares (scattered once to a cluster)."""

    prepared: Graph
    plan: AccumulationPlan
    spec: object
    st: object
    logits: str
    high: "Accumulation | None"


def _certify_graph_batch(job: _GraphJob, chunk: dict) -> tuple:
    """(certificates, exact logits, final certificates, samples recomputed, site work) of
    one batch; with ``high``, its uncertified samples recomputed whole in high."""
    cert, records = _graph_certificates(job.prepared, chunk, job.plan, job.spec, job.st, job.logits)
    ref = exact_values(run_graph(job.prepared, chunk, Exact()), [job.logits])[job.logits]
    n = cert.certified.shape[0]
    exact = np.asarray(ref.value, dtype=np.float64).reshape(n, -1)
    if job.high is None:
        return cert, exact, None, 0, {}
    rows = np.flatnonzero(~cert.certified)
    final = _copy(cert)
    if rows.size:
        again, _ = _graph_certificates(job.prepared, {k: v[rows] for k, v in chunk.items()},
                                       AccumulationPlan(job.high), job.spec, job.st, job.logits)
        _scatter(final, rows, again)
    work: dict = {}
    _site_work(records, n, rows.size, job.high, work)
    return cert, exact, final, rows.size, work


def _certify_graph(graph: Graph, data, acc, spec, st, batch_size: int, high: "Accumulation | None",
                   cost_model) -> tuple:
    """(certificates, exact logits, policy): with ``high``, the uncertified samples of each
    batch recomputed whole in high (docs/method.md#certified-predictions)."""
    plan = AccumulationPlan(acc)
    if hasattr(data, "feeds"):
        feeds = data.feeds([t.name for t in graph.inputs])
    else:
        feeds = data if isinstance(data, dict) else {graph.inputs[0].name: np.asarray(data)}
    prepared, feeds, st = prepare(graph, feeds, st)
    job = _GraphJob(prepared, plan, spec, st, graph.outputs[0], high)
    results = run_tasks(_certify_graph_batch, job, list(batches(graph, feeds, batch_size)), desc="certify graph")
    parts = [r[0] for r in results]
    policy = None
    if high is not None:
        work: dict = {}
        for r in results:
            for key, (components, counts) in r[4].items():
                entry = work.setdefault(key, [0, {}])
                entry[0] += components
                for spec_, count in counts.items():
                    entry[1][spec_] = entry[1].get(spec_, 0) + count
        work_rows = [LayerWork(length, counts) for (_, length), (_, counts) in work.items()]
        cost = run_cost(work_rows, [components for components, _ in work.values()], 1, high, cost_model)
        final = _concat([r[2] for r in results])
        again = int(sum(r[3] for r in results))
        recomputed_from = np.where(_concat(parts).certified, -1, 0)
        stages = [Stage(0, again, int(np.count_nonzero(final.certified[recomputed_from == 0])))] if again else []
        policy = CertifyPolicy(high.spec, stages, recomputed_from, final, np.zeros(0, dtype=bool), cost)
    return _concat(parts), np.concatenate([r[1] for r in results]), policy


# ---------------------------------------------------------------------------------- entry


def certify(model: "Network | Graph | str", data, acc, storage=None, *, labels=None, bound="deterministic",
            until_certified: bool = False, high=DEFAULT_HIGH, cost="bits", batch_size: "int | None" = None,
            precision: int = 113, data_name: "str | None" = None) -> Certification:
    """Certify every sample of ``data`` (an (N, n) array, named inputs or a Dataset) for
    ``model`` (a classifier: an MLP, or a graph whose first output is its logits; not an
    embedding model) under
    ``acc`` (a spec or row; for graphs also a plan) and ``storage`` (see the module
    docstring). ``labels`` adds accuracies. ``until_certified`` recomputes the
    uncertified samples in ``high`` (MLPs: last layers first; graphs: whole samples) and
    charges the ``cost`` model.
    ``bound`` must be deterministic: a certificate is a proof."""
    from emulator.modelio import load_model

    net = load_model(model) if isinstance(model, str) else model
    spec = parse_bound(bound)
    if spec.kind != "deterministic":
        raise MixaccError(f"certify needs the deterministic bound (a proof), got {spec.spec!r}.")
    if model_task(net, labels) == "embedding":
        raise MixaccError(f"Model {net.name!r} is an embedding model: there is no class to certify.")
    st = parse_storage(storage)
    high_row = parse_accumulation(high)
    high_row = high_row if until_certified else None
    if isinstance(net, Graph):
        cert, exact, policy = _certify_graph(net, data, acc, spec, st, min(batch_size or GRAPH_BATCH, GRAPH_BATCH),
                                             high_row, get_cost_model(cost))
        description = plan_description(AccumulationPlan(acc))
    else:
        accumulation = parse_accumulation(acc)
        x = data.x if hasattr(data, "feeds") else data
        cert, exact, policy = _certify_mlp(net, x, accumulation, spec, layer_storage(st), precision, batch_size or DEFAULT_BATCH,
                                           high_row, get_cost_model(cost))
        description = accumulation.describe()
    exact_class = predicted_class(exact)
    if labels is not None and len(labels) != exact_class.shape[0]:
        raise DataError(f"labels has {len(labels)} entries but the data has {exact_class.shape[0]} samples.")
    classes = net.meta.get("classes")
    result = Certification(
        model=net.name, data=data_name, accumulation=description, storage=st.spec if st else None,
        certificates=cert, flipped=flipped(cert.predicted, exact_class), exact_class=exact_class,
        accuracy=None if labels is None else accuracy(cert.predicted, labels, classes),
        exact_accuracy=None if labels is None else accuracy(exact_class, labels, classes),
    )
    if policy is not None:
        policy.flipped = flipped(policy.final.predicted, exact_class)
        policy.accuracy = None if labels is None else accuracy(policy.final.predicted, labels, classes)
        result.policy = policy
    return result

