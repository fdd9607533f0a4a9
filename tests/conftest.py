"""Session fixtures: the local SLURM cluster and the Fashion-MNIST files.

A missing system dependency skips the tests that need it on a workstation, but fails them
when CI=true: CI installs everything (`make test`), so a skip there would hide a broken
set-up.
"""

import errno
import gzip
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
# The session's cluster has two nodes (node1, node2: separate hosts in their own network
# namespaces), so the multi-node tests run on it and every other slurm test too. Like the
# script, it lives in $PERCEIVER_SLURM_DIR on $PERCEIVER_SLURM_PORT when they are set.
SESSION_NODES = 2
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI=true, where every dependency must be present."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (a failure, not a skip, because CI=true)", pytrace=False)
    pytest.skip(reason)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def slurm_cluster():
    """The two-node cluster of slurm/local-cluster.sh, started once per session; yields
    its slurm.conf (also exported as SLURM_CONF). A cluster that was already running is
    left running. One that a pytest session started is stopped by the last pytest session
    using it, so concurrent sessions on this machine do not pull it from under each other."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    absent = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "ip")
              if not shutil.which(b, path=search)]
    if absent:
        skip_or_fail(f"SLURM/munge/iproute2 not installed (no {', '.join(absent)}): "
                     "run `apt-get install slurm-wlm munge iproute2` or `make test`")
    if os.geteuid() != 0:
        skip_or_fail("the local cluster's nodes are network namespaces, which need root: "
                     "run the slurm tests as root")
    was_running = subprocess.run([CLUSTER_SCRIPT, "status"], capture_output=True).returncode == 0
    start = subprocess.run([CLUSTER_SCRIPT, "start", "--nodes", str(SESSION_NODES)],
                           capture_output=True, text=True)
    if start.returncode:
        pytest.fail(f"slurm/local-cluster.sh start failed:\n{start.stderr}", pytrace=False)
    conf = Path(start.stdout.strip().removeprefix("export SLURM_CONF="))
    sessions = conf.parent.parent / "pytest-sessions"
    sessions.mkdir(exist_ok=True)
    started_by_pytest = sessions / "started"
    if not was_running:
        started_by_pytest.touch()
    me = sessions / str(os.getpid())
    me.touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(conf))
        yield conf
    me.unlink()
    others = 0
    for session in sessions.glob("[0-9]*"):
        if _alive(int(session.name)):
            others += 1
        else:  # a session that died without its teardown
            session.unlink(missing_ok=True)
    if started_by_pytest.exists() and not others:
        subprocess.run([CLUSTER_SCRIPT, "stop"], check=True, capture_output=True)
        started_by_pytest.unlink()


@pytest.fixture(autouse=True)
def _cluster_for_slurm_marker(request):
    """Marking a test `slurm` is enough to get the cluster."""
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm_cluster")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module whose numbers are compared across processes and
    runs (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """Debian's dataset-fashion-mnist IDX files (the embedded default data set)."""
    from experiments.data import FASHION_MNIST_ROOT

    root = Path(FASHION_MNIST_ROOT)
    absent = [name for name in FASHION_MNIST_FILES if not (root / name).is_file()]
    if absent:
        skip_or_fail(f"Fashion-MNIST missing under {root} ({', '.join(absent)}): "
                     "run `apt-get install dataset-fashion-mnist` or `make test`")
    return root


@pytest.fixture(scope="session")
def tiny_fashion_mnist(fashion_mnist_root, tmp_path_factory) -> Path:
    """The first 1024 training and 256 test images of the real Fashion-MNIST as IDX files:
    real data that loads, trains and tests in a moment."""
    from experiments.data import FASHION_MNIST_FILES, read_idx

    root = tmp_path_factory.mktemp("fashion-mnist")
    for part, files in FASHION_MNIST_FILES.items():
        count = 1024 if part == "train" else 256
        for name, dims in zip(files, (3, 1), strict=True):
            array = read_idx(fashion_mnist_root / name, dims)[:count]
            header = (0x0800 + dims).to_bytes(4, "big") + b"".join(
                n.to_bytes(4, "big") for n in array.shape)
            (root / name).write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))
    return root


CHROMIUM = "/usr/bin/chromium"  # Debian's package `chromium`, which `make test` installs


@pytest.fixture
def browser():
    """A headless Chromium driven by Playwright, for the tests that open a report or a
    TensorBoard page as a reader would."""
    if shutil.which(CHROMIUM) is None:
        skip_or_fail("chromium missing: run `apt-get install chromium` or `make test`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright missing: `pip install -e .[dev]` or `make test`")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: 2m, 256m) mounted at `path` for a test, a disk to
    fill up; unmounted after (needs root, or CAP_SYS_ADMIN)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        skip_or_fail(f"cannot mount a tmpfs to fill up ({done.stderr.strip() or 'mount failed'}):"
                     " this test needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up, then free `leave` bytes: room for small records, not a checkpoint."""
    filler = disk / "filler"
    # Unbuffered: a buffered file keeps the tail of a short write and raises ENOSPC again
    # when it is closed (1 fill in 16 failed so, by the free space left modulo 64 KiB).
    with filler.open("wb", buffering=0) as f:
        try:
            while f.write(bytes(65536)):
                pass
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
