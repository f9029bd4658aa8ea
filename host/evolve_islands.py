"""Evolution at scale: the island search of :mod:`trine.host.evolve`, its islands on Ray workers.

One (1 + offspring) search (:func:`trine.host.evolve.train_evolve`) is a chain of small steps,
each depending on the last: it cannot be split across machines. Many searches can. The island
search runs ``islands`` copies of it from the same initial network, each with its own random
stream, for ``migrate_every`` generations (an *epoch*); then every island continues from the
fittest of them (fitness on the whole training set, ties to the lowest island), and so on.
Islands explore in parallel; the migration keeps the best network found by any.

The islands of an epoch are independent tasks, evaluated by an engine:

* ``local`` (no Ray needed): one after the other, in this process;
* ``ray``: as Ray tasks (``pip install 'trine[ray]'``), on ``workers`` local processes
  (``ray.init(num_cpus=workers)``) or on a running cluster (``address``, as ``ray.init`` takes
  it: ``"auto"``, ``"ray://head:10001"``). The training data goes to Ray's object store once.

What a run computes depends on the data, the settings, ``seed`` and ``islands`` only, never on
the engine or the number of workers: island ``i`` of epoch ``e`` draws from
``default_rng([seed, i, e])``, and every fitness is a deterministic function of integer
accumulators (:mod:`trine.host.evolve_net`). So with ``max_generations`` the same seed gives
the same program for any number of workers (tested); a ``budget_s`` stop, as for one search,
depends on the machine's speed. ``python -m bench evolve_islands`` measures the speed-up.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.reference import Layer
from trine.host.evolve_net import EvolvingNet, forward
from trine.host.learning import TrainError, check_int, single_threaded_blas
from trine.host.results import Stopwatch, accuracy

__all__ = ["ENGINES", "DEFAULT_ISLANDS", "DEFAULT_MIGRATE_EVERY", "IslandState",
           "LocalEngine", "RayEngine", "make_engine", "run_islands"]

#: The engines an island search runs on.
ENGINES = ("local", "ray")
#: Islands of ``--workers``/``--ray`` runs when ``--islands`` is not given.
DEFAULT_ISLANDS = 4
#: Generations per island between migrations.
DEFAULT_MIGRATE_EVERY = 500


@dataclass
class IslandState:
    """One island's network (the trits, biases and shifts an :class:`EvolvingNet` holds)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    shifts: list[int]

    @classmethod
    def of(cls, net: EvolvingNet) -> IslandState:
        return cls([w.copy() for w in net.w], [b.copy() for b in net.bias], list(net.shift))


@dataclass
class _Task:
    """What one island does in one epoch (all of it plain data, so Ray can ship it)."""

    state: IslandState
    island: int
    epoch: int
    generations: int
    #: the batch schedule's progress: gen_offset / gen_total with a generation limit,
    #: else elapsed seconds (time_offset + this task's) / budget_s
    gen_offset: int
    gen_total: int | None
    time_offset: float
    budget_s: float | None


def _epoch(data: tuple[np.ndarray, np.ndarray], task: _Task, settings: Any, relus: list[bool],
           seed: int) -> dict[str, Any]:
    """Run one island for one epoch; return its state, fitness and counts."""
    from trine.host.evolve import _Search  # the one search, shared with train_evolve

    x_q, y = data
    with single_threaded_blas():
        s = task.state
        net = EvolvingNet(x_q, y, s.weights, s.biases, s.shifts, relus, settings.temperature)
        search = _Search(net, settings, np.random.default_rng([seed, task.island, task.epoch]))
        clock = Stopwatch()
        done = 0
        for g in range(task.generations):
            if task.gen_total is not None:
                fraction = (task.gen_offset + g) / task.gen_total
            else:
                fraction = (task.time_offset + clock()) / task.budget_s
                if fraction >= 1.0:
                    break
            search.step(fraction)
            done += 1
        return {"state": IslandState.of(net), "fitness": net.fitness(), "generations": done,
                "evaluations": search.evaluations, "accepted": search.accepted,
                "sample_evaluations": search.sample_evaluations}


class LocalEngine:
    """Islands one after the other in this process (no Ray needed)."""

    name = "local"
    workers = 1

    def __init__(self, data, settings, relus, seed):
        self._args = (data, settings, relus, seed)

    def map(self, tasks: Sequence[_Task]) -> list[dict[str, Any]]:
        data, settings, relus, seed = self._args
        return [_epoch(data, t, settings, relus, seed) for t in tasks]

    def close(self) -> None:
        pass


class RayEngine:
    """Islands as Ray tasks on ``workers`` local processes, or on the cluster at ``address``."""

    name = "ray"

    def __init__(self, data, settings, relus, seed, *, workers: int | None = None,
                 address: str | None = None):
        try:
            import ray
        except ImportError:
            raise TrainError("the island search on workers needs Ray: pip install "
                             "'trine[ray]' (or run without --workers/--ray)") from None
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            if address is not None:
                _check_reachable(address)
                try:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise TrainError(f"cannot reach the Ray cluster at {address!r}: "
                                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                     ) from None
            else:
                # Ray runs its workers at niceness 15 by default, so on a busy machine they
                # would get a fraction of the CPU the calling process gets
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         object_store_memory=256 << 20, logging_level=logging.ERROR)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._data = ray.put(data)
        self._settings, self._relus, self._seed = settings, relus, seed
        self._remote = ray.remote(num_cpus=1)(_epoch)

    def map(self, tasks: Sequence[_Task]) -> list[dict[str, Any]]:
        refs = [self._remote.remote(self._data, t, self._settings, self._relus, self._seed)
                for t in tasks]
        return self._ray.get(refs)

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, not after Ray's minutes of retries, when ``host:port`` does not answer."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise TrainError(f"a Ray address is 'auto', HOST:PORT or ray://HOST:PORT, not "
                         f"{address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise TrainError(f"cannot reach the Ray cluster at {address!r} "
                         f"({e.strerror or type(e).__name__})") from None


def make_engine(data, settings, relus, seed, *, workers: int | None = None,
                address: str | None = None):
    """The engine for ``workers`` / ``address``: Ray when either is given, else local."""
    if workers is not None:
        workers = check_int(workers, "workers", 1)
    if address is not None and workers is not None:
        raise TrainError("give workers (a local Ray instance) or a Ray address, not both")
    if address is None and workers is None:
        return LocalEngine(data, settings, relus, seed)
    return RayEngine(data, settings, relus, seed, workers=workers, address=address)


def run_islands(x_q: np.ndarray, y: np.ndarray, net: EvolvingNet, settings: Any, *,
                islands: int, migrate_every: int, seed: int, budget_s: float | None,
                max_generations: int | None, xt_q: np.ndarray | None, yt: np.ndarray | None,
                workers: int | None = None, address: str | None = None,
                progress: Callable[[float, str], None] | None = None
                ) -> tuple[EvolvingNet, list[dict[str, float]], dict[str, Any]]:
    """Evolve ``net`` (the initial network) by the island search; return the fittest island's
    network, the history (one point per epoch) and the run's counts."""
    islands = check_int(islands, "islands", 1)
    migrate_every = check_int(migrate_every, "migrate_every", 1)
    relus = list(net.relu)
    clock = Stopwatch()
    engine = make_engine((x_q, y), settings, relus, seed, workers=workers, address=address)
    best = IslandState.of(net)
    history: list[dict[str, float]] = []
    counts = {"evaluations": 0, "accepted": 0, "sample_evaluations": 0}
    gen = epoch = 0

    def record(state: IslandState, fitness: float, island: int | None) -> None:
        layers = [Layer(w, b, s, r) for w, b, s, r in
                  zip(state.weights, state.biases, state.shifts, relus, strict=True)]
        out = forward(x_q, layers)
        history.append({
            "elapsed_s": clock(), "generation": gen, "epoch": epoch, "island": island,
            "train_fitness": fitness,
            "train_acc": accuracy(out, y),
            "test_acc": accuracy(forward(xt_q, layers), yt) if xt_q is not None else None,
        })

    record(best, net.fitness(), None)
    try:
        while True:
            if max_generations is not None and gen >= max_generations:
                break
            if budget_s is not None and clock() >= budget_s:
                break
            n = migrate_every if max_generations is None else min(migrate_every,
                                                                  max_generations - gen)
            tasks = [_Task(best, i, epoch, n, gen, max_generations, clock(), budget_s)
                     for i in range(islands)]
            results = engine.map(tasks)
            for r in results:
                for k in counts:
                    counts[k] += r[k]
            # the fittest island, ties to the lowest index: every island continues from it
            winner = max(range(islands), key=lambda i: (results[i]["fitness"], -i))
            best = results[winner]["state"]
            gen += max(r["generations"] for r in results)
            epoch += 1
            record(best, results[winner]["fitness"], winner)
            if progress is not None:
                p = history[-1]
                f = (gen / max_generations if max_generations is not None else 0.0)
                if budget_s is not None:
                    f = max(f, clock() / budget_s)
                test = "" if p["test_acc"] is None else f" test {p['test_acc']:.3f}"
                progress(min(f, 1.0), f"epoch {epoch} gen {gen} train {p['train_acc']:.3f}"
                         f"{test} ({islands} islands, {engine.name})")
            if all(r["generations"] == 0 for r in results):
                break
    finally:
        engine.close()
    final = EvolvingNet(x_q, y, best.weights, best.biases, best.shifts, relus,
                        settings.temperature)
    run = {**counts, "generations": gen, "epochs": epoch, "islands": islands,
           "migrate_every": migrate_every, "engine": engine.name, "workers": engine.workers,
           "seconds": clock()}
    if math.isnan(final.fitness()):
        raise RuntimeError("internal error: the island search's fitness is not a number")
    return final, history, run
