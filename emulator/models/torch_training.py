"""What every bundled model trained with PyTorch shares (extra ``torch``): the deterministic
setting, the training loop, and the check that the converted model computes what the
module computes.

Training runs on the CPU with one thread, ``torch.use_deterministic_algorithms(True)`` and
fixed seeds (initialisation and shuffling), in float64: a fixed number of epochs of
mini-batches in an order drawn by ``torch.randperm`` from a generator seeded by the
recipe's seed, cross-entropy loss, the recipe's optimiser (and learning-rate schedule).
The trained module is then rounded to float32 (the released weights), whose values the
converted model holds exactly in float64. float64 training keeps retraining under other
CPU kernels within about 1e-9 relative before that rounding (so within one float32 unit
in the last place after it), where float32 training is chaotic.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import numpy as np

from ..data import Dataset
from ..metrics import predicted_class

__all__ = ["AGREEMENT", "require_torch", "deterministic", "fit", "relative_difference", "check_agreement"]

AGREEMENT = 1e-10
"""Largest relative difference allowed between the converted model's and the module's
float64 logits (max over a sample's logits of |model - torch|, over max |torch|)."""


def require_torch():
    """The ``torch`` module, or a one-line error naming the extra."""
    try:
        import torch
    except ImportError:
        raise RuntimeError("Training this model needs PyTorch: pip install 'mixacc[torch]'.") from None
    return torch


@contextlib.contextmanager
def deterministic(torch, seed: int):
    """One thread, deterministic algorithms, the global RNG seeded; all restored after."""
    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def fit(torch, module, train_set: Dataset, recipe) -> float:
    """Train ``module`` (float64) in place on ``train_set`` for ``recipe.epochs`` epochs of
    ``recipe.batch_size``; ``recipe.optimizer(torch, parameters, steps)`` gives the
    optimiser and its learning-rate schedule (None: constant). Returns the mean loss of the
    last epoch."""
    x = torch.tensor(train_set.x, dtype=torch.float64)
    y = torch.tensor(train_set.y, dtype=torch.long)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    steps = recipe.epochs * math.ceil(len(x) / recipe.batch_size)
    optimizer, schedule = recipe.optimizer(torch, module.parameters(), steps)
    module.train()
    total = 0.0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=shuffle)
        total = 0.0
        for start in range(0, len(x), recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            loss = torch.nn.functional.cross_entropy(module(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(batch)
    module.eval()
    return total / len(x)


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max over samples of max_i |got_i - want_i| / max_i |want_i|."""
    scale = np.max(np.abs(want), axis=1)
    return float(np.max(np.max(np.abs(got - want), axis=1) / scale))


def check_agreement(torch, name: str, logits: Callable[[Dataset], np.ndarray], module,
                    sets: Sequence[Dataset]) -> float:
    """The converted model's float64 ``logits(data)`` against ``module.double()`` on
    ``sets``: their relative difference; raises when it exceeds :data:`AGREEMENT` or a
    predicted class differs."""
    reference = module.double()
    worst = 0.0
    for data in sets:
        with torch.no_grad():
            want = reference(torch.tensor(data.x, dtype=torch.float64)).numpy()
        got = logits(data)
        worst = max(worst, relative_difference(got, want))
        if worst > AGREEMENT:
            raise RuntimeError(f"{name}: the float64 logits differ from torch's by {worst:.3g} relative on the "
                               f"{data.split} set (allowed {AGREEMENT:g}).")
        if not np.array_equal(predicted_class(got), predicted_class(want)):
            raise RuntimeError(f"{name}: the model and torch predict different classes on the {data.split} set.")
    return worst
