"""lepton_kernels.distributed: the single-process world, argument checks, the distributed DataLoader
split and dropout slices (no MPI needed), and 2-process runs under mpiexec (skipped without
mpi4py or mpiexec): training equal to one process, collectives, mismatched ranks, a dead rank."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lepton_kernels import distributed as dist
from lepton_kernels import models
from lepton_kernels.autograd import Tensor
from lepton_kernels.data import DataLoader
from lepton_kernels.data.loader import _local_rows
from lepton_kernels.distributed import _world, collectives
from lepton_kernels.nn import functional as F

MPI_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
            "MPI_LOCALRANKID", "HYDRA_CONTROL_FD", "PMI_FD")


def _plain_env(**extra) -> dict:
    """This environment without MPI launcher variables (the test may itself run under mpiexec)."""
    env = {k: v for k, v in os.environ.items() if k not in MPI_VARS}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _single_process_world():
    if _world.started_by_mpiexec():
        pytest.skip("this test process was itself started by mpiexec")


# --------------------------------------------------------------------------- single process
def test_single_process_world_is_a_no_op():
    dist.init()
    assert dist.is_initialized() and dist.world_size() == 1 and dist.rank() == 0
    dist.barrier()
    dist.check_same({"anything": 1})
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(4, dtype=np.int64)
    for op in ("sum", "max", "min"):
        dist.all_reduce([a, b], op=op)
    dist.all_reduce(a)  # mean of one rank
    dist.broadcast([a, b], root=0)
    np.testing.assert_array_equal(a, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(b, np.arange(4))


def test_environment_detection():
    assert not _world.started_by_mpiexec({"PATH": "/bin"})
    for name in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALRANKID"):
        assert _world.started_by_mpiexec({name: "0"})


def test_single_process_never_imports_mpi4py():
    code = ("import sys, numpy as np; import lepton_kernels.distributed as d; d.init(); "
            "d.all_reduce([np.ones(3)]); d.broadcast(np.ones(2)); d.barrier(); "
            "from lepton_kernels import models; m = d.DistributedDataParallel(models.LeNet5(seed=0)); "
            "m.sync_gradients(); print(d.world_size(), 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_plain_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan"])
def test_bad_timeout_environment_is_refused(value):
    code = "import lepton_kernels.distributed as d; d.init()"
    out = subprocess.run([sys.executable, "-c", code], env=_plain_env(LEPTON_DIST_TIMEOUT=value),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "LEPTON_DIST_TIMEOUT" in out.stderr


# --------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("fn", [dist.all_reduce, dist.broadcast])
def test_collective_argument_errors(fn):
    name = fn.__name__
    with pytest.raises(TypeError, match=rf"{name}: arrays must be"):
        fn({"a": np.ones(2)})
    with pytest.raises(TypeError, match=rf"{name}: arrays\[1\] must be a numpy.ndarray; got builtins.list"):
        fn([np.ones(2), [1.0, 2.0]])
    for dtype in (np.float16, np.bool_, np.complex64):
        with pytest.raises(TypeError, match=rf"{name}: arrays\[0\] has dtype"):
            fn([np.ones(2, dtype)])
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=rf"{name}: arrays\[0\] is read-only"):
        fn([ro])
    with pytest.raises(ValueError, match=rf"{name}: arrays\[0\] must be C-contiguous"):
        fn([np.ones((4, 4))[:, ::2]])
    base = np.ones(10)
    with pytest.raises(ValueError, match=rf"{name}: arrays\[0\] and arrays\[1\] overlap"):
        fn([base[:6], base[4:]])
    with pytest.raises(ValueError, match="overlap"):
        fn([base, base])
    fn([base[:5], base[5:]])  # adjacent views are fine


def test_all_reduce_op_errors():
    with pytest.raises(ValueError, match=r"all_reduce: op must be one of 'mean', 'sum', 'max', 'min'; got 'avg'"):
        dist.all_reduce([np.ones(2)], op="avg")
    with pytest.raises(ValueError, match="all_reduce: op must be"):
        dist.all_reduce([np.ones(2)], op=None)
    with pytest.raises(TypeError, match=r"all_reduce: op='mean' needs floating arrays; arrays\[1\] has dtype int32"):
        dist.all_reduce([np.ones(2), np.ones(2, np.int32)])
    dist.all_reduce([np.ones(2, np.int32)], op="sum")


def test_broadcast_root_errors():
    with pytest.raises(ValueError, match=r"broadcast: root must be in \[0, 1\) \(the world size\); got 1"):
        dist.broadcast([np.ones(2)], root=1)
    with pytest.raises(ValueError, match="got -1"):
        dist.broadcast([np.ones(2)], root=-1)
    for root in (0.0, "0", True, None):
        with pytest.raises(TypeError, match="broadcast: root must be an int"):
            dist.broadcast([np.ones(2)], root=root)
    dist.broadcast([np.ones(2)], root=np.int64(0))


def test_ddp_refuses_non_numpy_parameters():
    class FakeDevice:
        shape, dtype, size = (2,), np.dtype(np.float32), 2

    model = models.LinearRegression(2, 1, seed=0)
    model.parameters()[0].data = FakeDevice()
    with pytest.raises(TypeError, match=r"DistributedDataParallel: parameter 0\.weight is a .*FakeDevice"):
        dist.DistributedDataParallel(model)


# --------------------------------------------------------------------------- buckets
@pytest.mark.parametrize("capacity", [1, 3, 7, 10, 64, 1000])
def test_bucket_plan_covers_the_stream_once(capacity):
    sizes = (5, 1, 12, 0, 7, 30)
    plan = collectives._plan(sizes, capacity)
    seen = [np.zeros(n, int) for n in sizes]
    for length, segments in plan:
        assert 0 < length <= capacity
        assert sum(c for *_, c in segments) == length
        filled = 0
        for pos, src, dst, count in segments:
            assert dst == filled  # segments fill the bucket in order, without gaps
            filled += count
            seen[pos][src:src + count] += 1
    assert all((s == 1).all() for s in seen)


def test_weighted_pack_and_unpack_without_mpi(monkeypatch):
    """reduce_flat's pack/scale/unpack path runs in a world of one when a weight is given."""
    monkeypatch.setattr(collectives, "BUCKET_BYTES", 24)  # 6 float32 or 3 float64 per bucket: many buckets
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(t) for s, t in [((3, 4), np.float32), (5, np.float64), (7, np.float32),
                                                             ((0, 2), np.float32), ((2, 2, 2), np.float64)]]
    expected = [a * 0.25 for a in arrays]
    collectives.reduce_flat(arrays, "sum", scale=0.25)
    for a, e in zip(arrays, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6)


# --------------------------------------------------------------------------- DataLoader split
def test_local_rows_partition_every_batch():
    for world in range(1, 9):
        for total in range(0, 40):
            bounds = [_local_rows(total, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("shuffle", [True, False])
def test_distributed_batches_concatenate_to_the_single_process_batch(world, shuffle):
    n, batch = 12 * 5 + 5, 12  # a short last batch of 5: uneven slices, empty ones for world 6
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n)
    single = DataLoader((x, y), batch_size=batch, shuffle=shuffle, seed=7)
    ranks = [DataLoader((x, y), batch_size=batch, shuffle=shuffle, seed=7) for _ in range(world)]
    for epoch in range(2):  # the second epoch draws a new permutation on every rank alike
        per_rank = [list(loader._batches(r, world)) for r, loader in enumerate(ranks)]
        expected = list(single)
        assert all(len(p) == len(expected) == 6 for p in per_rank)
        for b, (xb, yb) in enumerate(expected):
            shards = [per_rank[r][b][1] for r in range(world)]
            assert [s.total for s in shards] == [len(xb)] * world
            assert [s.start for s in shards] == [0] + [s.stop for s in shards[:-1]]
            np.testing.assert_array_equal(np.concatenate([per_rank[r][b][0][0] for r in range(world)]), xb)
            np.testing.assert_array_equal(np.concatenate([per_rank[r][b][0][1] for r in range(world)]), yb)
            for r in range(world):
                assert len(per_rank[r][b][0][0]) == shards[r].stop - shards[r].start


def test_distributed_map_style_dataset_split():
    items = [(np.full(2, i, np.float32), i) for i in range(10)]
    single = [yb.tolist() for _, yb in DataLoader(items, batch_size=4, shuffle=True, seed=1)]
    halves = [[yb.tolist() for (_, yb), _ in DataLoader(items, batch_size=4, shuffle=True, seed=1)._batches(r, 2)]
              for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == single


def test_distributed_loader_in_one_process_and_its_errors(monkeypatch):
    x = np.arange(10, dtype=np.float32)
    loader = DataLoader(x, batch_size=4, shuffle=True, seed=0, distributed=True)
    assert [len(b) for b in loader] == [4, 4, 2] and loader.shard == (0, 2, 2)
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    with pytest.raises(ValueError, match=r"batch_size \(the global batch\) must be divisible by the world size 3; "
                                         r"got 4"):
        DataLoader(x, batch_size=4, distributed=True)
    with pytest.raises(ValueError, match="distributed shuffling needs a seed"):
        DataLoader(x, batch_size=3, shuffle=True, distributed=True)
    loader = DataLoader(x, batch_size=3, shuffle=False, distributed=True)
    assert [b.tolist() for b in loader] == [[1.0], [4.0], [7.0], []]  # the last batch (9,) leaves rank 1 empty
    assert loader.shard == (1, 1, 1)


# --------------------------------------------------------------------------- dropout slices
@pytest.mark.parametrize("world", [2, 3, 5])
def test_dropout_inside_batch_shard_takes_its_rows_of_the_global_mask(world):
    x = np.ones((10, 3, 4), np.float32)
    single_rng = np.random.default_rng(3)
    full = F.dropout(Tensor(x), 0.5, rng=single_rng).data
    parts = []
    for r in range(world):
        lo, hi = _local_rows(10, r, world)
        rng = np.random.default_rng(3)  # every rank's generator is in the same state
        with F.batch_shard(lo, hi, 10):
            parts.append(F.dropout(Tensor(x[lo:hi]), 0.5, rng=rng).data)
        assert rng.bit_generator.state == single_rng.bit_generator.state  # and stays in step with one process
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_batch_shard_errors_and_nesting():
    with pytest.raises(ValueError, match=r"batch_shard: expected 0 <= start <= stop <= total; got start=3, stop=2"):
        with F.batch_shard(3, 2, 4):
            pass
    with pytest.raises(TypeError, match="batch_shard: start, stop and total must be ints"):
        with F.batch_shard(0, 1.5, 4):
            pass
    with F.batch_shard(0, 2, 4):
        with pytest.raises(ValueError, match=r"dropout: inside batch_shard\(0, 2, 4\) the input's axis 0 must hold "
                                             r"the 2 rows"):
            F.dropout(Tensor(np.ones((3, 2), np.float32)), 0.5)
        with F.batch_shard(1, 2, 2):
            F.dropout(Tensor(np.ones((1, 2), np.float32)), 0.5)
        F.dropout(Tensor(np.ones((2, 2), np.float32)), 0.5)  # the outer setting is back
    F.dropout(Tensor(np.ones((3, 2), np.float32)), 0.5)


def test_ddp_forward_slices_match_one_process_with_dropout():
    """Replicas of a dropout model run on their slices reproduce one process's output (world of one
    with explicit shards: the same calls every rank makes under mpiexec)."""
    x = Tensor(np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32))
    full = models.DigitsCNN(seed=4)(x).data
    parts = []
    for r in range(3):
        lo, hi = _local_rows(10, r, 3)
        replica = dist.DistributedDataParallel(models.DigitsCNN(seed=4))
        parts.append(replica(Tensor(x.data[lo:hi]), shard=dist.BatchShard(lo, hi, 10)).data)
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=1e-5, atol=1e-6)
    replica = dist.DistributedDataParallel(models.DigitsCNN(seed=4))
    with pytest.raises(ValueError, match=r"DistributedDataParallel: shard \(0, 3, 10\) does not describe 2 rows"):
        replica(Tensor(x.data[:2]), shard=(0, 3, 10))


def test_ddp_forwards_to_the_model():
    model = models.LeNet5(seed=0)
    ddp = dist.DistributedDataParallel(model)
    assert ddp.parameters() == model.parameters()
    assert list(ddp.state_dict()) == list(model.state_dict())  # no "module." prefix
    assert ddp.eval() is ddp and not model.training and ddp.train() is ddp and model.training
    assert ddp.config() == model.config() and ddp.arguments == model.arguments
    ddp.custom = 3
    assert model.custom == 3


# --------------------------------------------------------------------------- under mpiexec
def _mpiexec() -> list[str]:
    exe = shutil.which("mpiexec")
    if exe is None or importlib.util.find_spec("mpi4py") is None:
        pytest.skip("needs mpi4py and mpiexec (pip install lepton-kernels[mpi])")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    # Open MPI refuses root and more ranks than cores unless told; MPICH's hydra needs no flag.
    return [exe, "--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version else [exe]


def _run(cmd, timeout=120, **env):
    return subprocess.run(cmd, env=_plain_env(**env), capture_output=True, text=True, timeout=timeout)


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """An IDX file as published: big-endian magic (0x0000 type ndim), big-endian uint32 dims, the bytes."""
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _small_mnist(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    for kind, n in (("train", 201), ("t10k", 40)):  # 201 = 3 x 64 + 9: an odd last batch, split 5 / 4
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):  # a bright square whose place tells the label
            images[i, 2 * label:2 * label + 8, 4:12] += 180
        _write_idx(directory / f"{kind}-images-idx3-ubyte", 2051, images)
        _write_idx(directory / f"{kind}-labels-idx1-ubyte", 2049, labels)
    return directory


def _weights(path):
    from lepton_kernels import io

    return io.load(path)[0]


def test_two_processes_train_the_single_process_model(tmp_path):
    mpiexec = _mpiexec()
    data = _small_mnist(tmp_path)
    args = ["-m", "lepton_kernels", "train", "--model", "lenet5", "--dataset", f"mnist:{data}", "--epochs", "1",
            "--batch-size", "64", "--seed", "0", "--no-progress"]
    one = _run([sys.executable, *args, "--save", str(tmp_path / "one.safetensors"),
                "--metrics-json", str(tmp_path / "one.json")])
    assert one.returncode == 0, one.stderr
    start = time.monotonic()
    two = _run([*mpiexec, "-n", "2", sys.executable, *args, "--save", str(tmp_path / "two.safetensors"),
                "--metrics-json", str(tmp_path / "two.json")], LEPTON_DIST_TIMEOUT="60")
    assert two.returncode == 0, two.stdout + two.stderr
    assert time.monotonic() - start < 60
    assert two.stdout.count("test accuracy") == 1 and two.stdout.count("saved") == 1  # rank 0 alone reports
    assert "2 processes" in two.stdout
    a, b = _weights(tmp_path / "one.safetensors"), _weights(tmp_path / "two.safetensors")
    assert list(a) == list(b)
    largest = max(float(np.abs(v).max()) for v in a.values())
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-3 * largest, f"max |w1 - w2| = {worst:.3g}, largest weight {largest:.3g}"
    assert json.loads((tmp_path / "one.json").read_text())["world_size"] == 1
    assert json.loads((tmp_path / "two.json").read_text())["world_size"] == 2


_COLLECTIVES = textwrap.dedent("""
    import sys
    import numpy as np
    import lepton_kernels.distributed as d
    from lepton_kernels.distributed import collectives
    from lepton_kernels import models
    from lepton_kernels.autograd import Tensor

    collectives.BUCKET_BYTES = 40  # many buckets, arrays cut across them
    r, w = d.rank(), d.world_size()
    assert w == 2 and d.is_initialized()
    f = np.arange(23, dtype=np.float32) * (r + 1)
    g = np.full((3, 5), r + 0.5)
    i = np.arange(9, dtype=np.int64) * (1 - 2 * r)
    d.all_reduce([f, g], op="mean")
    assert np.array_equal(f, np.arange(23, dtype=np.float32) * 1.5) and np.allclose(g, 1.0)
    d.all_reduce([i], op="sum")
    assert np.array_equal(i, np.zeros(9, np.int64))
    m, n = np.array([r, -r], np.int32), np.array([r, -r], np.float64)
    d.all_reduce([m], op="max"); d.all_reduce([n], op="min")
    assert m.tolist() == [1, 0] and n.tolist() == [0.0, -1.0]
    b = [np.full(17, r, np.float32), np.full((2, 9), 10 + r, np.int16)]
    d.broadcast(b, root=1)
    assert (b[0] == 1).all() and (b[1] == 11).all()
    d.barrier()
    d.check_same({"same": True})

    # DDP: rank 1 starts from other weights and receives rank 0's; gradients of an uneven split
    # (3 rows and 1 row of a batch of 4) combine to the gradient of the global mean loss.
    model = d.DistributedDataParallel(models.LogisticRegression(3, 2, seed=r))
    reference = models.LogisticRegression(3, 2, seed=0)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), reference.parameters()))
    from lepton_kernels.nn import functional as F
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0])
    lo, hi = (0, 3) if r == 0 else (3, 4)
    model.backward(F.cross_entropy(model(Tensor(x[lo:hi]), shard=(lo, hi, 4)), y[lo:hi]))
    F.cross_entropy(reference(Tensor(x)), y).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), (p.grad, q.grad)
    # an empty slice: no gradient on rank 1, rank 0 holds the whole batch
    model.zero_grad()
    lo, hi = (0, 4) if r == 0 else (4, 4)
    out = model(Tensor(x[lo:hi]), shard=(lo, hi, 4))
    if r == 0:
        F.cross_entropy(out, y).backward()
    model.sync_gradients()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    model.zero_grad()
    model.sync_gradients()  # no gradient anywhere stays None, as in one process
    assert all(p.grad is None for p in model.parameters())
    # parameters of two dtypes take the general path: one bucketed buffer per dtype
    mixed = models.LogisticRegression(3, 2, seed=0)
    mixed.parameters()[1].data = mixed.parameters()[1].data.astype(np.float64)
    mixed = d.DistributedDataParallel(mixed)
    weight, bias = mixed.parameters()
    weight.grad, bias.grad = np.full((2, 3), 4.0 * r, np.float32), (np.full(2, 8.0) if r == 1 else None)
    object.__setattr__(mixed, "_weight", 0.25 if r == 0 else 0.75)  # what forward(shard=...) records
    mixed.sync_gradients()
    assert np.allclose(weight.grad, 3.0) and np.allclose(bias.grad, 6.0) and bias.grad.dtype == np.float64
    try:  # different architectures are found before any weight is sent
        d.DistributedDataParallel(models.LogisticRegression(3 + r, 2, seed=0))
    except d.MismatchError as exc:
        assert "ranks were started with different models: ranks [1] differ from rank 0" in str(exc), exc
    else:
        raise AssertionError("no MismatchError")
    d.barrier()  # the world is still usable
    open(f"{sys.argv[1]}/ok.{r}", "w").close()  # files, not stdout: the ranks' output may interleave
""")


def test_collectives_and_ddp_under_two_processes(tmp_path):
    mpiexec = _mpiexec()
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    out = _run([*mpiexec, "-n", "2", sys.executable, str(script), str(tmp_path)], LEPTON_DIST_TIMEOUT="60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "ok.0").exists() and (tmp_path / "ok.1").exists()


def test_ranks_started_with_different_arguments_all_exit_with_a_message(tmp_path):
    mpiexec = _mpiexec()
    args = [sys.executable, "-m", "lepton_kernels", "train", "--model", "digits-cnn", "--no-progress"]

    def rank(i, epochs):  # each rank's stderr in its own file: the forwarded streams may interleave
        return ["-n", "1", "sh", "-c", f'exec "$0" "$@" 2>{tmp_path}/err.{i}', *args, "--epochs", epochs]

    start = time.monotonic()
    out = _run([*mpiexec, *rank(0, "1"), ":", *rank(1, "2")], LEPTON_DIST_TIMEOUT="60")
    assert out.returncode != 0
    for i in range(2):
        err = (tmp_path / f"err.{i}").read_text()
        assert ("lepton-kernels train: error: ranks were started with different command-line arguments: ranks [1] "
                "differ from rank 0") in err, err
    assert "training" not in out.stdout
    assert time.monotonic() - start < 50  # found at start, not by the timeout


def test_a_rank_that_cannot_read_its_data_ends_the_job_before_the_timeout(tmp_path):
    """The same arguments, but rank 1 runs where data.csv is missing: it aborts the job at exit
    instead of leaving rank 0 waiting for the timeout."""
    mpiexec = _mpiexec()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    rows = "\n".join(f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40))
    (tmp_path / "a" / "data.csv").write_text("x0,x1,label\n" + rows + "\n")
    args = [sys.executable, "-m", "lepton_kernels", "train", "--model", "logistic", "--dataset", "csv:data.csv",
            "--epochs", "50", "--no-progress"]

    def rank(folder):
        return ["-n", "1", "sh", "-c", f'cd {tmp_path / folder} && exec "$0" "$@"', *args]

    start = time.monotonic()
    out = _run([*mpiexec, *rank("a"), ":", *rank("b")], timeout=100, LEPTON_DIST_TIMEOUT="90")
    assert out.returncode != 0
    assert "lepton-kernels train: error:" in out.stderr and "data.csv" in out.stderr, out.stderr
    assert "test accuracy" not in out.stdout
    assert time.monotonic() - start < 60


_DEAD_RANK = textwrap.dedent("""
    import sys
    import numpy as np
    import lepton_kernels.distributed as d

    if d.rank() == 1:  # leaves without taking part in the collective
        if sys.argv[1] == "raise":
            raise ValueError("rank 1 crashed")
        sys.exit(0 if sys.argv[1] == "exit" else "rank 1 failed")
    d.all_reduce([np.ones(1000, np.float32)])
    print("rank 0 finished")
""")


@pytest.mark.parametrize("how", ["exit", "fail"])
def test_a_dead_rank_makes_the_other_exit_within_the_timeout(tmp_path, how):
    mpiexec = _mpiexec()
    script = tmp_path / "dead.py"
    script.write_text(_DEAD_RANK)
    start = time.monotonic()
    out = _run([*mpiexec, "-n", "2", sys.executable, str(script), how], timeout=60, LEPTON_DIST_TIMEOUT="2")
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "rank 0 finished" not in out.stdout
    assert "rank 0: all_reduce(mean) did not complete within 2 s (LEPTON_DIST_TIMEOUT)" in out.stderr, out.stderr
    assert elapsed < 30


def test_an_uncaught_exception_on_one_rank_ends_the_job_before_the_timeout(tmp_path):
    mpiexec = _mpiexec()
    script = tmp_path / "dead.py"
    script.write_text(_DEAD_RANK)
    start = time.monotonic()
    out = _run([*mpiexec, "-n", "2", sys.executable, str(script), "raise"], timeout=100, LEPTON_DIST_TIMEOUT="90")
    assert out.returncode != 0
    assert "ValueError: rank 1 crashed" in out.stderr and "rank 0 finished" not in out.stdout
    assert time.monotonic() - start < 60  # the excepthook aborted the job; the others did not wait 90 s


# ---------------------------------------------------------------- staging-buffer moves
@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_pack_and_unpack_move_every_element(native, dtype, monkeypatch):
    from lepton_kernels.distributed import collectives

    if native and collectives._NATIVE_MOVES is None:
        pytest.skip("the native module is not built")
    if not native:
        monkeypatch.setattr(collectives, "_NATIVE_MOVES", None)
    rng = np.random.default_rng(0)
    parts = [(rng.standard_normal(n) * 100).astype(dtype) for n in (7, 1, 0, 300, 33)]
    buf = np.empty(sum(p.size for p in parts), dtype)
    scale = 0.25 if dtype != np.int32 else None
    collectives.pack(buf, parts, scale)
    expected = np.concatenate(parts) * (scale or 1)
    np.testing.assert_array_equal(buf, expected.astype(dtype))
    pieces = np.split(buf, np.cumsum([q.size for q in parts])[:-1])
    # 3 divides; a power of two divides through its reciprocal, still exactly NumPy's divide
    for divisor in ((3, 4) if dtype != np.int32 else (1,)):
        out = [np.empty_like(p) for p in parts]
        collectives.unpack(buf, out, divisor)
        for o, piece in zip(out, pieces):
            np.testing.assert_array_equal(o, np.divide(piece, divisor) if divisor != 1 else piece)


def test_native_moves_refuse_bad_parts():
    from lepton_kernels import _lepton_cpu

    buf = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="hold 5 elements, the buffer 6"):
        _lepton_cpu.gather([np.ones(5, np.float32)], buf)
    with pytest.raises(TypeError, match=r"parts\[0\] must have the buffer's dtype"):
        _lepton_cpu.gather([np.ones(6, np.float64)], buf)
    with pytest.raises(TypeError, match=r"parts\[1\] must be a numpy.ndarray"):
        _lepton_cpu.gather([np.ones(3, np.float32), [1.0, 2.0, 3.0]], buf)
    with pytest.raises(ValueError, match="C-contiguous"):
        _lepton_cpu.scatter(buf, [np.ones(12, np.float32)[::2]])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(6, np.float32)
        ro.flags.writeable = False
        _lepton_cpu.scatter(buf, [ro])
    with pytest.raises(ValueError, match="float32 or float64"):
        _lepton_cpu.gather([np.ones(6, np.int32)], np.zeros(6, np.int32), 0.5)
