"""Shared fixtures: tiny, fast settings for real runs on the real Fashion-MNIST data."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "search" / "quickstart.yaml"

# A search small enough for a test: 2 epochs (1 warm-up + 1 search) of 3 steps on 512 examples.
TINY_ARGS = [
    "--trainer.max_epochs", "2",
    "--trainer.limit_train_batches", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.log_every_n_steps", "1",
    "--data.init_args.max_train_examples", "512",
    "--data.init_args.batch_size", "16",
    "--model.init_args.space.init_args.channels", "4",
    "--model.init_args.space.init_args.layers", "3",
    "--model.init_args.warmup_epochs", "1",
]  # fmt: skip


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    """``fit --config quickstart.yaml`` with tiny settings, writing into ``tmp_path``."""
    return [
        "fit", "--config", str(QUICKSTART), *TINY_ARGS,
        "--trainer.default_root_dir", str(tmp_path),
        *extra,
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    """Environment for a child ``unas-cli``: the tests and examples folders importable (user modules)."""
    env = dict(os.environ)
    paths = [str(ROOT / "tests"), str(ROOT / "examples"), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_NUM_THREADS", "1")
    for name in RANK_VARIABLES:  # a child unas-cli is always a launcher of its own ranks
        env.pop(name, None)
    env["MASTER_PORT"] = str(rendezvous_port())  # a DDP child's; unused by a single process
    return env


#: what a DDP launcher (torchrun, SLURM, Lightning's own) tells the processes it starts: a unas-cli that
#: inherits LOCAL_RANK believes someone else starts its ranks, and waits for a rank 1 that never comes
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves ``os.environ`` as it found it. Lightning's DDP launcher writes LOCAL_RANK,
    NODE_RANK, WORLD_SIZE and MASTER_ADDR/PORT into the process that calls ``Trainer.fit`` and never takes
    them back: after an in-process DDP test, every DDP test that starts ``unas-cli`` hung in shuffled order."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def one_intra_op_thread():
    """Torch on one intra-op thread for the test, restored after it. The Monte-Carlo estimator tests draw
    thousands of estimates on tensors of a dozen numbers, where every step is autograd bookkeeping that a
    second thread only slows down (measured: 12-16% per test on 2 cores); model tests stay on all threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rendezvous_port() -> int:
    """A free port for a DDP run's rendezvous, below the kernel's ephemeral range.

    Lightning picks MASTER_PORT by binding port 0 and closing it, and the TCP store binds it again later:
    two DDP runs starting at once (two suites on one machine) can be handed the same ephemeral port, and
    the second fails with EADDRINUSE. A random port below the ephemeral range is never handed out by the
    kernel in between, so concurrent runs collide only by a 1-in-thousands draw.
    """
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        return port


def benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def markdown_rows(text: str, heading: str = "") -> list[list[str]]:
    """The body rows (cells stripped) of the first markdown table after ``heading`` in a benchmark's output."""
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def markdown_table(text: str, heading: str = "") -> dict[str, list[str]]:
    """``markdown_rows`` keyed by the first cell: name -> the other cells."""
    return {row[0]: row[1:] for row in markdown_rows(text, heading)}


def session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of the session ``sid``, as ``pid command`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{stat.parent.name} {cmdline[:200]}")
    return found


def launch_in_session(args: list[str], log: Path, timeout: float) -> tuple[int | None, list[str]]:
    """``unas-cli ARGS`` as a launcher in a session of its own (output to ``log``): its exit status (None when
    it outlived ``timeout``) and the processes of its session left right after it ended; none is left
    running afterwards."""
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [*unas_cli(), *args], cwd=ROOT, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = launcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        left = session_processes(launcher.pid)
        if left or code is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    return code, left


def unas_cli() -> list[str]:
    return [sys.executable, "-m", "unas_lightning.cli"]


def run_cli(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``unas-cli ARGS`` in a child process (the repository as working directory), output captured."""
    return subprocess.run(
        [*unas_cli(), *args], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def run_cli_here(args: list[str], capsys) -> subprocess.CompletedProcess:
    """``unas-cli ARGS`` in this process, reported as a child process would report it: the exit status and
    what it printed (an uncaught exception: status 1 and its traceback). Seconds cheaper than ``run_cli``
    (no interpreter and Lightning start-up); for runs that need no process of their own (DDP, signals)."""
    import traceback

    from unas_lightning.cli.app import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except Exception:
        traceback.print_exc()
        code = 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.fixture(scope="session")
def fashion_mnist_available() -> None:
    from unas_lightning.data.datamodules import FASHION_MNIST_DEBIAN

    if not Path(FASHION_MNIST_DEBIAN, "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: run `apt-get install dataset-fashion-mnist` (scripts/setup.sh does).")


def tiny_trainer(tmp_path, epochs=2, **overrides):
    """A quiet CPU Trainer for a few real batches; ``overrides`` replace any of its settings."""
    import lightning as L

    settings = {
        "accelerator": "cpu",
        "max_epochs": epochs,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return L.Trainer(**{**settings, **overrides})


def tiny_data():
    from unas_lightning import FashionMNISTDataModule

    return FashionMNISTDataModule(batch_size=16, max_train_examples=256)


# -- pytest-xdist: the cores shared out --------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n auto`` in pyproject.toml) each worker gets its share of the cores, for its
    own torch and for every process it starts (``OMP_NUM_THREADS``, inherited by a child ``unas-cli`` and
    its DDP ranks). Torch's default of one thread per core in every worker oversubscribes the machine, and
    OpenMP threads that spin waiting for a busy core made tests of 2 s take 25-30 s."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return
    import torch

    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


# -- the type check, started early ----------------------------------------------------------------------
_MYPY: Path | None = None  # the output file of the mypy run this process started


def _mypy_files() -> Path | None:
    """Under pytest-xdist: the output file of the one mypy run of this test session (its exit status goes to
    the same name with ``.rc``), shared by the workers; None without xdist."""
    import tempfile

    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return Path(tempfile.gettempdir()) / f"unas-mypy-{uid}.txt" if uid else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the type check is among the tests to run, start mypy now, in the background: it runs beside the
    tests before it instead of adding its minute at its turn (under pytest-xdist, near the end of the run,
    while the other workers may have finished). Without xdist this process starts it; under xdist the first
    worker does, and whichever worker runs the test reads its result."""
    global _MYPY
    if not any(item.nodeid.endswith("test_types.py::test_mypy_passes") for item in session.items):
        return
    shared = _mypy_files()
    if shared is None and not os.environ.get("PYTEST_XDIST_WORKER"):
        _MYPY = start_mypy()
    elif shared is not None and os.environ.get("PYTEST_XDIST_WORKER") == "gw0":
        _MYPY = start_mypy(shared)


def start_mypy(out: Path | None = None) -> Path:
    """``python -m mypy`` over the package as pyproject.toml configures it, in the background; its output goes
    to ``out`` (default: a new temporary file) and, once it ends, its exit status to ``out`` with the suffix
    ``.rc`` (written whole: a reader never sees half of it)."""
    import shlex
    import tempfile

    if out is None:
        fd, name = tempfile.mkstemp(prefix="unas-mypy-", suffix=".txt")
        os.close(fd)
        out = Path(name)
    python, text, rc = (shlex.quote(str(p)) for p in (sys.executable, out, out.with_suffix(".rc")))
    subprocess.Popen(["sh", "-c", f"{python} -m mypy > {text} 2>&1; echo $? > {rc}.tmp && mv {rc}.tmp {rc}"], cwd=ROOT)
    return out


def mypy_result(timeout: float = 600) -> tuple[int, str]:
    """The exit status and output of the mypy run started at collection (by this process or, under xdist, by
    worker gw0), or of one started now."""
    import time

    global _MYPY
    out = _MYPY or _mypy_files() or start_mypy()
    _MYPY = None
    rc, deadline = out.with_suffix(".rc"), time.monotonic() + timeout
    while not rc.exists():
        assert time.monotonic() < deadline, f"mypy wrote no {rc} in {timeout:.0f} s"
        time.sleep(0.5)
    code = int(rc.read_text())
    text = out.read_text()
    rc.unlink()
    out.unlink()
    return code, text
