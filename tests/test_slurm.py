"""The local SLURM cluster is real: submitit arrays and requeues run on it as on a GPU cluster.

Also: cluster profiles are validated, and translated into the sbatch flags a user expects.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from experiments.orchestration.cluster import Profile, load_profile
from experiments.orchestration.executors import EXECUTORS
from perceiver_core.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "local-cluster.sh"

# The jobs unpickle this module's functions in a fresh interpreter where tests/ is not
# importable, so ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_for(jobs, timeout_s=60):
    """job.result() would wait forever for a job that died without a result (there is no
    sacct here to report it), so poll the result files with a deadline."""
    deadline = time.time() + timeout_s
    while not all(job.done() for job in jobs):
        if time.time() > deadline:
            logs = "\n".join(f"{job.job_id}: {job.stderr()}" for job in jobs if not job.done())
            pytest.fail(f"jobs not done after {timeout_s}s; squeue:\n"
                        f"{subprocess.run(['squeue'], capture_output=True, text=True).stdout}"
                        f"\nstderr:\n{logs}")
        time.sleep(0.5)
    return [job.result() for job in jobs]


def square_in_slurm(x):
    env = os.environ
    return {"value": x * x, "job_id": env["SLURM_JOB_ID"],
            "array_job_id": env["SLURM_ARRAY_JOB_ID"], "array_task_id": env["SLURM_ARRAY_TASK_ID"],
            "partition": env["SLURM_JOB_PARTITION"], "omp_threads": env.get("OMP_NUM_THREADS")}


class CountAttempts(submitit.helpers.Checkpointable):
    """Blocks on its first attempt until preempted; submitit's checkpoint() pickles this
    object (attempts included) and requeues it, so the second attempt returns."""

    def __init__(self, marker_dir):
        self.marker_dir = Path(marker_dir)
        self.attempts = 0

    def __call__(self):
        self.attempts += 1
        env = os.environ
        (self.marker_dir / f"attempt-{self.attempts}").write_text(env["SLURM_JOB_ID"])
        if self.attempts == 1:
            time.sleep(120)  # the test preempts us here
        return {"attempts": self.attempts, "job_id": env["SLURM_JOB_ID"],
                "restart_count": env.get("SLURM_RESTART_COUNT")}


@pytest.mark.slurm
def test_array_of_four_runs_as_slurm_jobs(tmp_path):
    executor = EXECUTORS["slurm"].make(load_profile("local"), tmp_path / "%j", name="array-test")
    jobs = executor.map_array(square_in_slurm, range(4))
    results = wait_for(jobs)

    assert [r["value"] for r in results] == [0, 1, 4, 9]
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(4)]
    assert [r["array_task_id"] for r in results] == ["0", "1", "2", "3"]
    assert {r["array_job_id"] for r in results} == {array_id}
    assert len({r["job_id"] for r in results}) == 4  # each array task is its own SLURM job
    assert {r["partition"] for r in results} == {"debug"}
    assert {r["omp_threads"] for r in results} == {"1"}  # the profile's setup lines ran


@pytest.mark.slurm
def test_preempted_checkpointable_job_is_requeued_and_resumes(tmp_path):
    executor = EXECUTORS["slurm"].make(load_profile("local"), tmp_path / "%j",
                                       name="requeue-test")
    job = executor.submit(CountAttempts(tmp_path))
    first = tmp_path / "attempt-1"
    deadline = time.time() + 30
    while not first.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), f"job never started: {job.stderr()}"
    time.sleep(1)  # let submitit install its signal handlers before the signal arrives
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 to the job step

    (result,) = wait_for([job])
    assert result == {"attempts": 2, "job_id": job.job_id, "restart_count": "1"}
    assert (tmp_path / "attempt-2").read_text() == job.job_id  # same job, run again
    assert f"Requeued job {job.job_id}" in job.stdout()  # by submitit, via scontrol requeue


@pytest.mark.slurm
def test_profile_becomes_sbatch_flags(tmp_path):
    gpu = load_profile("gpu-example").with_overrides({"timeout_min": 30})
    executor = EXECUTORS["slurm"].make(gpu, tmp_path, name="gpu")
    script = executor._executor._make_submission_file_text("true", "uid")
    for flag in ("--partition=gpu", "--gpus-per-node=8", "--ntasks-per-node=8",
                 "--cpus-per-task=10", "--mem=480GB", "--time=30", "--constraint=volta32gb",
                 "--signal=USR2@120", "--job-name=gpu", "--nodes=1"):
        assert f"#SBATCH {flag}\n" in script
    assert "#SBATCH --account" not in script and "#SBATCH --qos" not in script
    assert "\nmodule load cuda/12.1\n" in script
    assert executor._executor.max_num_timeout == 10
    local = EXECUTORS["slurm"].make(load_profile("local"), tmp_path)
    assert "--gpus-per-node" not in local._executor._make_submission_file_text("true", "uid")


def test_profiles_load():
    local = load_profile("local")
    assert local.partition == "debug" and local.ntasks_per_node == 1
    assert local.slurm_conf.endswith("/etc/slurm.conf") and "$" not in local.slurm_conf
    gpu = load_profile(REPO / "slurm" / "profiles" / "gpu-example.yaml")
    assert (gpu.name, gpu.gpus_per_node, gpu.ntasks_per_node, gpu.slurm_conf) == \
        ("gpu-example", 8, 8, None)
    assert Profile(gpus_per_node=4).ntasks_per_node == 4


@pytest.mark.parametrize("text, match", [
    ("gpu_per_node: 8\n", r"unknown cluster profile key 'gpu_per_node'; did you mean 'gpus_per"),
    ("gpus_per_node: -1\n", r"cluster\.gpus_per_node=-1 must be >= 0"),
    ("timeout_min: 2h\n", r"cluster\.timeout_min='2h' must be an integer"),
    ("mem_gb: 0\n", r"cluster\.mem_gb=0 must be > 0"),
    ("setup: module load cuda\n", r"cluster\.setup='module load cuda' must be a list"),
    ("partition: [a, b]\n", r"cluster\.partition=\['a', 'b'\] must be a string"),
])
def test_bad_profile_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as error:
        load_profile(path)
    assert str(path) in str(error.value)


def test_bad_profile_or_override_is_rejected_before_submitting(tmp_path):
    with pytest.raises(ConfigError, match="unknown cluster profile 'nope'; available: .*local"):
        load_profile("nope")
    local = load_profile("local")
    with pytest.raises(ConfigError, match="unknown cluster profile key"):
        local.with_overrides({"timeout": 5})
    with pytest.raises(ConfigError, match="'local' override: .*timeout_min=0 must be >= 1"):
        local.with_overrides({"timeout_min": 0})
    shorter = local.with_overrides({"timeout_min": 5})
    assert (shorter.name, shorter.timeout_min, shorter.partition) == ("local", 5, "debug")
    absent = Profile(name="x", slurm_conf=str(tmp_path / "slurm.conf"))
    with pytest.raises(ConfigError, match="does not exist; .*local-cluster.sh start"):
        EXECUTORS["slurm"].make(absent, tmp_path)


def test_debug_executor_runs_in_process(tmp_path):
    executor = EXECUTORS["debug"].make(load_profile("gpu-example"), tmp_path)
    assert executor.submit(pow, 2, 10).result() == 1024


@pytest.mark.slurm
def test_script_lifecycle_on_a_private_cluster(tmp_path):
    """start/status/stop and their idempotence, on a second cluster (own state dir, ports)
    so the session's cluster is untouched."""
    env = {**os.environ, "PERCEIVER_SLURM_DIR": str(tmp_path / "cluster"),
           "PERCEIVER_SLURM_PORT": "16917"}
    run = lambda *cmd: subprocess.run([SCRIPT, *cmd], env=env, capture_output=True, text=True)
    try:
        assert run("status").returncode == 1
        bad = run("start", "--nodes", "two")
        assert bad.returncode == 1 and "--nodes 'two' must be a whole number >= 1" in bad.stderr
        started = run("start")
        assert started.returncode == 0, started.stderr
        conf = tmp_path / "cluster" / "etc" / "slurm.conf"
        assert started.stdout == f"export SLURM_CONF={conf}\n"
        assert "SlurmctldPort=16917" in conf.read_text()
        again = run("start")
        assert again.returncode == 0 and "already running: 1 node(s)" in again.stderr
        more = run("start", "--nodes", "2")
        assert more.returncode == 1 and "running with 1 node(s), --nodes 2 asked" in more.stderr
        lost = run("kill-node", "node1")
        assert lost.returncode == 1 and "kill-node needs a multi-node cluster" in lost.stderr
        status = run("status")
        assert status.returncode == 0
        assert any(line.split()[:2] == ["debug*", "up"] and "idle" in line
                   for line in status.stdout.splitlines())
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert run("stop").returncode == 0
    assert run("status").returncode == 1
    assert not list((tmp_path / "cluster" / "run").glob("*.pid"))
