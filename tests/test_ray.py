"""The Ray backend (``--backend ray``): on a local two-node cluster the rows equal the local backend's, a worker
killed mid-batch loses only that batch (Ray submits it again), and the flag without Ray is one line naming the extra.
CI installs Ray through the ``ray`` extra; a checkout without it skips the cluster tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from hypermeta.cli import main
from hypermeta.engine.batched import BatchedRunner
from hypermeta.engine.measurement import Measurement
from hypermeta.engine.pipeline import run_jobs
from hypermeta.engine.runner import Job
from hypermeta.parallel import BACKEND_VAR, pool_results, set_backend
from hypermeta.space import DQNConfig

CONFIG = DQNConfig.from_dict(dict(net_arch="small", batch_size=16, train_freq=4, target_update_interval=50,
                                  learning_starts=100, gamma=0.99, buffer_size=1000))


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    memory = 80 * 1024 ** 2
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": memory})
    c.add_node(num_cpus=1, object_store_memory=memory)  # a second node: tasks spread over two raylets
    c.wait_for_nodes()
    set_backend("ray", c.address)
    yield c
    ray.shutdown()
    c.shutdown()
    os.environ.pop(BACKEND_VAR, None)


def _jobs() -> list[Job]:
    return [Job("cartpole", name, config, Measurement(300, 2, 1), seed) for seed in (1, 2)
            for name, config in (("a", CONFIG), ("b", CONFIG.replace(lr_initial=3e-3)))]


def test_a_matrix_slice_on_a_two_node_cluster_equals_the_local_backend(cluster):
    import ray

    remote = run_jobs(_jobs(), runner=BatchedRunner(max_agents=1), workers=1)  # 4 batches, 4 Ray tasks
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    os.environ[BACKEND_VAR] = "local"
    try:
        local = run_jobs(_jobs(), runner=BatchedRunner(max_agents=1), workers=1)
    finally:
        os.environ[BACKEND_VAR] = "ray"
    key = ["method", "seed"]
    assert remote.sort_values(key)[["method", "seed", "curve", "auc"]].reset_index(drop=True).equals(
        local.sort_values(key)[["method", "seed", "curve", "auc"]].reset_index(drop=True))


def _dies_once(item: tuple[str, int]) -> int:
    """Kills its worker process the first time it runs an item (a marker file says it did), then squares it."""
    folder, n = item
    marker = Path(folder) / f"died-{n}"
    if not marker.exists():
        marker.write_text("x")
        os._exit(1)
    (Path(folder) / f"done-{n}-{os.getpid()}").write_text("x")
    return n * n


def test_a_worker_killed_mid_batch_loses_only_that_batch(cluster, tmp_path):
    items = [(str(tmp_path), n) for n in range(3)]
    results = dict(pool_results(_dies_once, items, workers=2))
    assert results == {item: item[1] ** 2 for item in items}  # every batch again after its worker died, once each
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("done-*")) == ["0", "1", "2"]


def test_the_flag_without_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(BACKEND_VAR, raising=False)  # restored afterwards: the module's cluster tests keep theirs
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    code = main(["evaluate", "cartpole", "--timesteps", "300", "--baseline", "base", "--backend", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "hypermeta[ray]"' in err
    assert list(tmp_path.iterdir()) == []


def test_the_scale_benchmark_reports_medians_ranges_and_the_overhead_per_batch(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import hypermeta.lab.scale_bench as scale

    walls = iter([2.0, 3.0, 1.5, 2.5, 1.0, 1.8] * 3)  # (local, ray) at each CPU count, per repetition
    monkeypatch.setattr(scale, "_timed", lambda jobs, backend, cpus, batch: next(walls) if len(jobs) > batch else 0.1)
    monkeypatch.setattr(scale.os, "cpu_count", lambda: 4)
    out = tmp_path / "scale.md"
    text = scale.run_scale_benchmark(Path(__file__).resolve().parents[1] / "studies" / "meta2" / "plan.yaml", 3, out)
    frame = __import__("pandas").read_csv(out.with_suffix(".csv"))
    assert len(frame) == 3 * 3 * 2 and set(frame["cpus"]) == {1, 2, 4}
    assert "| 1 | local | 80,000 | 80,000 - 80,000 |" in text  # 32 jobs x 5,000 steps in 2 s
    assert "Ray's overhead per batch" in text and "1 CPU: +0.25 s" in text  # (3.0 - 2.0) / 4 batches


def test_meta_init_runs_its_inner_batches_as_ray_tasks(cluster, tmp_path):
    import ray

    from hypermeta.lab.qstart_training import MetaInitSettings, meta_init

    plan = Path(__file__).resolve().parents[1] / "studies" / "meta2" / "plan.yaml"
    settings = MetaInitSettings(iterations=1, inner_steps=300, tasks_per_iteration=2)
    start = meta_init("cartpole", "reptile", plan, tmp_path / "s", settings)
    assert ray.is_initialized() and start.obs_dim == 4
    os.environ[BACKEND_VAR] = "local"
    try:
        local = meta_init("cartpole", "reptile", plan, tmp_path / "t", settings)
    finally:
        os.environ[BACKEND_VAR] = "ray"
    assert all((start.state[k] == local.state[k]).all() for k in start.state)  # the same start either way


def test_the_sb3_runner_runs_on_the_cluster_too(cluster):
    """Its run_many hands a partial to the pool: the Ray backend wraps it (ray.remote takes plain functions)."""
    import ray

    jobs = _jobs()[:2]
    assert os.environ[BACKEND_VAR] == "ray"
    remote = run_jobs(jobs, runner="sb3", workers=1)
    assert ray.is_initialized()
    os.environ[BACKEND_VAR] = "local"
    try:
        local = run_jobs(jobs, runner="sb3", workers=1)
    finally:
        os.environ[BACKEND_VAR] = "ray"
    assert sorted(remote["curve"]) == sorted(local["curve"])

