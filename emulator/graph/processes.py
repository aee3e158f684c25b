"""Tasks run side by side, one in this process and the others in child processes (the
arb passes of a refinement split their samples between the cores:
docs/method.md#the-exact-arithmetic).

A child is ``python -m emulator.graph.processes``: it reads two pickles from its standard
input, a task and its argument, and writes the pickle of ``task(argument)`` to its
standard output. Only objects this process made go through the pipe (the graph, feeds,
enclosures): it is how ``multiprocessing`` talks to its workers, without re-importing the
caller's ``__main__`` module, as ``multiprocessing``'s spawn does. Python's threads
cannot share the cores here, since python-flint holds the interpreter lock.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

__all__ = ["in_processes"]


def in_processes(task: Callable, arguments: Sequence) -> list:
    """``[task(a) for a in arguments]``, side by side: the first in this process, each
    other in a child process of its own (this process already holds what the task needs,
    so one child fewer costs no memory twice). ``task`` and the arguments must pickle; they
    are written to the child's pipe as they pickle, never held whole. A child that fails
    leaves its task to this process, with a warning naming the child's last line of
    error."""
    if not arguments:
        return []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))  # modules as found here
    with ThreadPoolExecutor(max(1, len(arguments) - 1)) as pool:
        children = [pool.submit(_child, task, a, env) for a in arguments[1:]]
        out = [task(arguments[0])]
        results = [c.result() for c in children]
    for argument, (ok, value) in zip(arguments[1:], results):
        if not ok:
            warnings.warn(f"a child process failed ({value}); its task runs in this process", RuntimeWarning,
                          stacklevel=2)
            value = task(argument)
        out.append(value)
    return out


def _child(task: Callable, argument, env: dict) -> tuple[bool, object]:
    """(True, the child's result) or (False, why it failed)."""
    try:
        proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        return False, str(exc)
    try:
        pickle.dump(task, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(argument, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        pass  # the child is gone: its error follows
    out, err = proc.communicate()
    if proc.returncode == 0:
        return True, pickle.loads(out)
    lines = err.decode(errors="replace").strip().splitlines()
    return False, lines[-1] if lines else f"exit status {proc.returncode}"


def _main() -> None:
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the result on the pipe
    task = pickle.load(source)
    result = task(pickle.load(source))
    pickle.dump(result, sink, protocol=pickle.HIGHEST_PROTOCOL)
    sink.flush()


if __name__ == "__main__":
    _main()
