"""trine.host.evolve_islands: the island search gives the same program on any number of Ray
workers as in-process, learns, and refuses what it cannot do with a clear error."""

import numpy as np
import pytest

from trine.host.data import load_digits_split
from trine.host.evolve import EvolveError, train_evolve
from trine.host.learning import TrainError

RUN = dict(hidden=(16,), budget_s=None, max_generations=300, islands=3, migrate_every=100,
           seed=5)


@pytest.fixture(scope="module")
def small():
    x, y, xt, yt = load_digits_split()
    return x[:400], y[:400], xt[:200], yt[:200]


@pytest.fixture(scope="module")
def local(small):
    x, y, xt, yt = small
    return train_evolve(x, y, x_test=xt, y_test=yt, **RUN)


def _same_program(a, b) -> bool:
    return len(a.layers) == len(b.layers) and all(
        np.array_equal(p.weights, q.weights) and np.array_equal(p.bias, q.bias)
        and p.shift == q.shift and p.relu == q.relu
        for p, q in zip(a.layers, b.layers, strict=True))


def test_the_island_search_learns_and_reports_its_run(local, small):
    x, y, xt, yt = small
    m = local.metrics
    assert m["engine"] == "local" and m["islands"] == 3 and m["epochs"] == 3
    assert m["generations"] == 300
    assert local.settings["islands"] == 3 and local.settings["migrate_every"] == 100
    # one history point at the start and one per epoch, the fittest island's
    assert [p["generation"] for p in local.history] == [0, 100, 200, 300]
    assert local.history[0]["island"] is None
    assert all(p["island"] in range(3) for p in local.history[1:])
    fitness = [p["train_fitness"] for p in local.history]
    assert fitness == sorted(fitness)  # every island starts from the fittest: never worse
    assert local.history[-1]["train_acc"] > local.history[0]["train_acc"] + 0.2
    assert m["train_acc"] == pytest.approx(local.history[-1]["train_acc"])
    # the program is what the reference computes
    assert np.mean(local.program.run_reference(xt).argmax(1) == yt) == m["test_acc"]


def test_the_same_seed_gives_the_same_program_on_any_number_of_workers(local, small):
    pytest.importorskip("ray")
    x, y, xt, yt = small
    for workers in (1, 2):
        r = train_evolve(x, y, x_test=xt, y_test=yt, workers=workers, **RUN)
        assert r.metrics["engine"] == "ray" and r.metrics["workers"] == workers
        assert _same_program(r.program, local.program), f"{workers} workers"
        assert r.metrics["evaluations"] == local.metrics["evaluations"]
        assert [p["train_fitness"] for p in r.history] == [
            p["train_fitness"] for p in local.history]


def test_another_seed_gives_another_program(local, small):
    x, y, _, _ = small
    assert not _same_program(train_evolve(x, y, **{**RUN, "seed": 6}).program, local.program)


@pytest.mark.parametrize("kw, message", [
    (dict(islands=0), "islands"),
    (dict(migrate_every=0), "migrate_every"),
    (dict(workers=0), "workers"),
    (dict(workers=2, ray_address="auto"), "not both"),
    (dict(ray_address=""), "ray_address"),
    (dict(ray_address="no-port"), "HOST:PORT"),
    (dict(ray_address="127.0.0.1:1"), "cannot reach the Ray cluster"),
    (dict(islands=2, arch="c4k3p1", input_shape=(1, 8, 8)), "MLPs"),
])
def test_bad_settings_are_refused_naming_them(small, kw, message):
    x, y, _, _ = small
    with pytest.raises(EvolveError, match=message):
        train_evolve(x, y, hidden=(8,), budget_s=None, max_generations=10, **kw)
    assert issubclass(EvolveError, TrainError)


def test_the_command_line_runs_the_island_search(tmp_path):
    from trine.cli.main import main
    from trine.host.program import Program

    out = tmp_path / "m.trine"
    assert main(["train", "--data", "digits", "--method", "evolve", "--hidden", "8",
                 "--generations", "60", "--islands", "2", "--migrate-every", "30",
                 "--no-float", "-q", "-o", str(out)]) == 0
    assert Program.load(out).layers[0].fan_out == 8
    assert main(["train", "--method", "qat", "--islands", "2", "-o", str(out)]) == 2
