"""A declarative study (``mixacc sweep CONFIG.toml``, docs/method.md#scale-out): lists of
models, data, accumulation specs, storage formats, bounds, tolerances and criteria, whose
product is a set of configurations run as one set of tasks (one per configuration), each
written to its own JSON with the hash of its configuration, plus a summary table.

A configuration whose JSON already exists with the same hash is not run again.

The TOML file::

    analysis = ["validate", "recompute"]   # or one of them
    models = ["digits-relu"]
    data = ["digits"]                       # optional: each model's own data
    samples = 200                           # optional: all
    seed = 0
    storage = ["none", "bf16"]              # "none": no storage rounding
    acc = ["fp16", "bf16"]                  # validate
    bound = ["deterministic"]               # validate
    low = ["fp16"]                          # recompute
    high = ["fp32"]                         # recompute
    taus = [0.01, 0.1]                      # recompute: one sweep over all of them
    criteria = ["kappa"]                    # recompute
    cost = "bits"                           # recompute
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from emulator.errors import DataError, MixaccError

from .distributed import run_tasks

__all__ = ["StudyConfig", "Configuration", "load_study", "parse_study", "run_study", "ANALYSES", "summary_rows"]


class StudyError(MixaccError):
    """A study file that cannot be run."""


@dataclass(frozen=True)
class Configuration:
    """One run of a study: the analysis and every setting it reads."""

    analysis: str
    model: str
    data: "str | None"
    samples: "int | None"
    seed: int
    storage: "str | None"
    acc: "str | None" = None
    bound: "str | None" = None
    low: "str | None" = None
    high: "str | None" = None
    taus: "tuple[float, ...] | None" = None
    criteria: "tuple[str, ...] | None" = None
    cost: "str | None" = None

    def key(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @property
    def hash(self) -> str:
        """sha256 of the configuration's canonical JSON (sorted keys)."""
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """A file name that tells the configuration: its settings, then 8 digits of its hash."""
        parts = [self.analysis, self.model, self.data, self.acc or (self.low and f"{self.low}-{self.high}"),
                 self.storage or "nostorage", self.bound]
        slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(p for p in parts if p)).strip("_")
        return f"{slug}_{self.hash[:8]}"


@dataclass(frozen=True)
class Analysis:
    """A kind of configuration: the list keys it takes a product over (beside models,
    data and storage), the keys it takes whole, its run and its summary columns."""

    name: str
    axes: tuple[str, ...]
    whole: tuple[str, ...]
    run: Callable
    summary: Callable


def _load(config: Configuration, models: dict):
    """(model, dataset) of a configuration: the first ``samples`` rows of its data."""
    from emulator.data import load_model_data

    net = models[config.model]
    data = load_model_data(net, config.data)
    if config.samples is not None and config.samples < len(data):
        data = data.head(config.samples)
    return net, data


def _run_validate(config: Configuration, models: dict) -> dict:
    import dataclasses

    from emulator.accumulation import parse_accumulation

    from .validation import validate

    net, data = _load(config, models)
    acc = parse_accumulation(config.acc)
    if acc.seed is None:
        acc = dataclasses.replace(acc, seed=config.seed)
    result = validate(net, data, acc, config.bound, config.storage, labels=data.y, data_name=data.name)
    return {**result.to_dict(), "split": data.split}


def _run_recompute(config: Configuration, models: dict) -> dict:
    from emulator.graph import Graph
    from emulator.storage import parse_storage

    from .sweep import sweep, sweep_record

    net, data = _load(config, models)
    graph = isinstance(net, Graph)
    storage = parse_storage(config.storage)
    result = sweep(net, data if graph else data.x, config.low, config.high, config.taus, config.criteria,
                   labels=data.y, storage=storage, cost=config.cost, seed=config.seed)
    return sweep_record(net, data, result, low=config.low, high=config.high, criteria=config.criteria,
                        taus=config.taus, storage=storage, seed=config.seed)


def _validate_summary(record: dict) -> dict:
    out = record["layers"][-1]["global"] if record.get("layers") else {}
    return {"violations": record["violations"], "flip rate": record["flip_rate"],
            "output max rel err": out.get("max_rel_error")}


def _recompute_summary(record: dict) -> dict:
    guided = [r for r in record["runs"] if r["method"] == "guided"]
    best = min(guided, key=lambda r: (r["flip_rate"], r["relative_cost"])) if guided else {}
    return {"runs": len(record["runs"]), "guided flip rate": best.get("flip_rate"),
            "guided rel cost": best.get("relative_cost")}


ANALYSES = {a.name: a for a in (
    Analysis("validate", ("acc", "bound"), (), _run_validate, _validate_summary),
    Analysis("recompute", ("low", "high"), ("taus", "criteria", "cost"), _run_recompute, _recompute_summary),
)}

_DEFAULTS = {"bound": ["deterministic"], "criteria": ["kappa"], "cost": "bits", "seed": 0, "data": [None],
             "storage": ["none"], "samples": None}
_LISTS = ("models", "data", "storage", "acc", "bound", "low", "high", "taus", "criteria", "analysis")
_KEYS = (*_LISTS, "samples", "seed", "cost")


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study: its configurations in the order of the file's lists."""

    configurations: tuple[Configuration, ...]


def _as_list(table: dict, key: str) -> list:
    value = table.get(key, _DEFAULTS.get(key))
    if value is None:
        raise StudyError(f"study: {key!r} is required by the analyses asked for.")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise StudyError(f"study: {key!r} is an empty list.")
    return items


def _checked(table: dict) -> dict:
    """Type and range checks of the study table, one line per problem."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise StudyError(f"study: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)}).")
    for key in ("models", "data", "storage", "acc", "bound", "low", "high", "criteria", "analysis"):
        for item in table.get(key, []) if isinstance(table.get(key), list) else [table.get(key)]:
            if item is not None and not isinstance(item, str):
                raise StudyError(f"study: {key!r} holds {item!r}, must be strings.")
    for key in ("samples", "seed"):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (key == "samples")):
            raise StudyError(f"study: {key} == {value!r}, must be an integer >= {int(key == 'samples')}.")
    if "cost" in table and not isinstance(table["cost"], str):
        raise StudyError(f"study: cost == {table['cost']!r}, must be a string.")
    return table


def _check_specs(config: Configuration) -> None:
    """Every spec of a configuration parses (one-line errors before anything runs)."""
    from emulator.accumulation import parse_accumulation
    from emulator.storage import parse_storage

    from .bounds import parse_bound
    from .cost import get_cost_model
    from .criteria import check_tau, get_criterion

    parse_storage(config.storage)
    for spec in (config.acc, config.low, config.high):
        if spec is not None:
            parse_accumulation(spec)
    if config.bound is not None:
        parse_bound(config.bound)
    for tau in config.taus or ():
        check_tau(tau)
    for criterion in config.criteria or ():
        get_criterion(criterion)
    if config.cost is not None:
        get_cost_model(config.cost)


def parse_study(table: dict) -> StudyConfig:
    """The configurations of a study table (see the module docstring)."""
    table = _checked(dict(table))
    analyses = _as_list(table, "analysis")
    for name in analyses:
        if name not in ANALYSES:
            raise StudyError(f"study: analysis {name!r} is not one of {', '.join(ANALYSES)}.")
    configurations = []
    for name in analyses:
        analysis = ANALYSES[name]
        axes = [_as_list(table, k) for k in ("models", "data", "storage", *analysis.axes)]
        whole = {}
        for key in analysis.whole:
            value = table.get(key, _DEFAULTS.get(key))
            if value is None:
                raise StudyError(f"study: {key!r} is required by the {name} analysis.")
            whole[key] = tuple(value) if isinstance(value, list) else value
        for model, data, storage, *rest in itertools.product(*axes):
            config = Configuration(
                analysis=name, model=model, data=data, samples=table.get("samples"), seed=table.get("seed", 0),
                storage=None if storage == "none" else storage, **dict(zip(analysis.axes, rest)), **whole)
            _check_specs(config)
            configurations.append(config)
    return StudyConfig(tuple(dict.fromkeys(configurations)))


def load_study(path: "str | Path") -> StudyConfig:
    """Read and parse a study file (TOML)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise StudyError("study files need Python 3.11 or later (tomllib).") from None
    with open(path, "rb") as fh:
        try:
            table = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise StudyError(f"{path}: not valid TOML ({str(exc).splitlines()[0]}).") from None
    return parse_study(table)


def _run_configuration(models: dict, config: Configuration) -> dict:
    """The JSON record of one configuration (a task: ``models`` is shared)."""
    record = ANALYSES[config.analysis].run(config, models)
    return {"configuration": config.key(), "configuration_hash": config.hash, **record}


def _done(path: Path, config: Configuration) -> "dict | None":
    """The record at ``path`` when it exists and was written for this configuration."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("configuration_hash") == config.hash else None


def run_study(study: StudyConfig, out: "str | Path", provenance: "Callable[[], dict] | None" = None) -> list[tuple]:
    """Run the configurations of ``study`` that ``out`` lacks, as one set of tasks, and
    write ``out/NAME.json`` for each; returns (configuration, record, ran) per
    configuration. The models are loaded once and shared by every task."""
    from emulator.modelio import load_model

    from .atomic import write_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory.")
    out.mkdir(parents=True, exist_ok=True)
    done = {c: _done(out / f"{c.name}.json", c) for c in study.configurations}
    todo = [c for c in study.configurations if done[c] is None]
    models = {name: load_model(name) for name in dict.fromkeys(c.model for c in todo)}
    records = run_tasks(_run_configuration, models, todo, desc="sweep")
    for config, record in zip(todo, records):
        if provenance is not None:
            record["provenance"] = provenance()
        write_json(out / f"{config.name}.json", record)
        done[config] = record
    ran = set(todo)
    return [(c, done[c], c in ran) for c in study.configurations]


def summary_rows(results: list[tuple]) -> list[dict]:
    """One row per configuration: its file, settings and the analysis's headline figures."""
    rows = []
    for config, record, _ in results:
        key = config.key()
        setting = key.get("acc") or f"{key.get('low')} -> {key.get('high')}"
        rows.append({"configuration": config.name, "analysis": config.analysis, "model": config.model,
                     "data": record.get("data"), "accumulation": setting, "storage": config.storage or "none",
                     **ANALYSES[config.analysis].summary(record)})
    return rows
