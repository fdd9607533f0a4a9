"""The workers of an Optuna study: each runs trials until the study has enough.

K identical workers (local processes or a SLURM array, started by `launch`) share the
study's storage. Each runs trials until the study has `trials` *finished* trials: COMPLETE
or PRUNED (Optuna's own count, as in MaxTrialsCallback). FAIL trials do not count, so a
failed trial is replaced; a worker gives up once as many trials raised as were asked for.

The count is exact under concurrency: right after a trial is created, it counts the live
trials (finished, running or queued) numbered below it, and if they already fill the study
it is not run but recorded FAIL with the user attr `surplus`. A worker with nothing to
start stays while other trials run, because it may have to retry one of them.

A trial is a normal run (experiments.train.train_run) in <out>/<run_id>/ that reports
val_acc after every evaluation, where the pruner may stop it (run status `pruned`). A trial
that raises ends FAIL with its error in the user attr `error`. A trial whose worker died is
noticed by a heartbeat: Optuna's own on RDB storages; on the journal, which has none, the
run's result.json heartbeat (written at every evaluation and checkpoint, so `stale_after_s`
must exceed the longest gap between two of them). It is marked FAIL with the reason in the
user attr `lost`, and its parameters are queued again once (user attr `retry_of`); the
retry has the same config, hence the same run folder, and resumes from its checkpoint. A
preempted or timed-out worker requeues itself (submitit's checkpoint) and first retries the
trial it was running. A worker on this host (the local executor's, or the local SLURM
cluster's) that died is noticed at once, without waiting for a heartbeat: its trial records
the worker's pid, which no longer exists.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from experiments.distributed import job_id
from experiments.orchestration.cluster import Requeueable
from experiments.orchestration.executors import Executor
from experiments.orchestration.study import (
    STUDY_FILE,
    StudySpec,
    is_rdb,
    make_sampler,
    open_study,
    public_url,
    storage_url,
    tally,
)
from experiments.records import write_yaml
from experiments.runfolder import RunBusy, RunFolder, migrate, pid_alive
from perceiver_core.config import ConfigError

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
POLL_S = 2.0  # how often an idle worker looks at the study again
# A trial names its worker (user attr `worker`) moments after it starts; one that has not
# after this long lost its worker in between (found by the soak, tests/test_soak.py).
ANNOUNCE_GRACE_S = 20.0


class Surplus(Exception):
    """The study already had enough live trials when this one was created."""


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, once: bool = True) -> None:
    """Queue a failed trial's parameters again (once, unless `once=False`), as Optuna's
    RetryHeartbeatStaleTrialCallback does: with its intermediate values, since the retry's
    run resumes from the checkpoint, and its system attrs (a grid trial keeps its point)."""
    if once and "retry_of" in trial.user_attrs:
        return
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": trial.number}, system_attrs=trial.system_attrs,
        intermediate_values=trial.intermediate_values))


def fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str,
                   once: bool = True) -> bool:
    """Fail another worker's RUNNING trial (the user attr `lost` says why) and retry it;
    False if it finished meanwhile.

    Optuna's Study API only finishes trials of this process, so this goes through the
    storage, as optuna.storages.fail_stale_trials does; of several workers failing the same
    trial at once exactly one succeeds (the storage raises for the others).
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "lost", reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    retry(study, trial, once)
    return True


def last_heartbeat(trial: optuna.trial.FrozenTrial) -> float:
    """When the trial last showed life: its run's result.json heartbeat, or its start."""
    beats = [trial.datetime_start.timestamp()] if trial.datetime_start else [0.0]
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir:
        try:
            beats.append(float(RunFolder(run_dir).read_result()["heartbeat"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet (the trial's start counts) or being replaced right now
    return max(beats)


def reap_silent_trials(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Journal storages have no Optuna heartbeat: fail (and retry) trials whose run went
    silent for longer than `stale_after_s`. Returns the trial numbers failed here."""
    now, failed = time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_heartbeat(trial)
        if silent > stale_after_s and fail_and_retry(
                study, trial, f"stale: no heartbeat for {silent:.0f} s (worker lost?); "
                              "parameters retried once"):
            failed.append(trial.number)
    return failed


def reap_dead_workers(study: optuna.Study) -> list[int]:
    """Fail (and retry) the RUNNING trials whose worker ran on this host and whose process
    is gone (user attr `worker` = host:pid). A local executor's job id is the pid of the
    controller that restarts a preempted worker: while it lives, the requeued worker
    retries its own trial. Workers on other hosts are left to the heartbeat. Returns the
    trial numbers failed here."""
    here, failed, now = socket.gethostname(), [], time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" not in trial.user_attrs:  # killed between starting it and naming itself
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - started > ANNOUNCE_GRACE_S and fail_and_retry(
                    study, trial, f"worker lost before it named itself (no worker "
                                  f"{now - started:.0f} s after the start); parameters "
                                  "retried once"):
                failed.append(trial.number)
            continue
        host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        job = str(trial.user_attrs.get("job"))
        if host != here or not pid.isdigit() or pid_alive(int(pid)) or \
                (job.isdigit() and pid_alive(int(job))):
            continue
        if fail_and_retry(study, trial, f"worker gone: its process {pid} on {host} no longer "
                                        "exists; parameters retried once"):
            failed.append(trial.number)
    return failed


def guarded(objective: Callable[[optuna.Trial], Any], trials: int) -> Callable:
    """`objective` behind the surplus check, recording any error as the user attr `error`."""
    def run(trial: optuna.Trial):
        try:
            ahead = sum(t.state in LIVE and t.number < trial.number
                        for t in trial.study.get_trials(deepcopy=False))
            if ahead >= trials:
                trial.set_user_attr("surplus", True)
                raise Surplus(f"not run: the study already had {trials} live trials")
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
    return run


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], Any], trials: int,
               reap: Callable[[optuna.Study], Any], poll_s: float = POLL_S) -> dict[str, int]:
    """One worker's loop: run trials until the study has `trials` finished ones."""
    while True:
        reap(study)
        count = tally(study)
        if count["finished"] >= trials:
            return count
        if count["failed"] >= trials:
            raise RuntimeError(f"study {study.study_name!r}: {count['failed']} trials failed "
                               f"(as many as were asked for); see `perceiver-ablate status`")
        if count["finished"] + count["running"] >= trials and not count["waiting"]:
            time.sleep(poll_s)  # enough trials are running; stay to retry one if it dies
            continue
        study.optimize(guarded(objective, trials), n_trials=1, catch=(Exception,))


def wait_for_twins(trial: optuna.Trial, run_id: str, poll_s: float = 0.2) -> None:
    """Never train one run folder twice at once (two trials may sample the same config).

    Like Lamport's bakery, with trial numbers as tickets: a trial that announced its run id
    waits until every lower-numbered RUNNING trial has announced its own and none of them
    holds the same run id. A higher twin sees this trial's announcement and waits for it.
    While it waits it reaps dead workers' trials, as an idle worker does: a lower trial
    whose worker died before announcing would otherwise hold every higher one forever."""
    while True:
        reap_dead_workers(trial.study)
        if not any(t.number < trial.number and t.user_attrs.get("run_id") in (None, run_id)
                   for t in trial.study.get_trials(deepcopy=False,
                                                   states=(TrialState.RUNNING,))):
            return
        time.sleep(poll_s)


class TrialRun:
    """The objective: one trial = one training run under the study's results folder."""

    def __init__(self, spec: StudySpec, out: str | Path):
        self.spec, self.out = spec, Path(out)

    def __call__(self, trial: optuna.Trial):
        from experiments.train import RunStopped, train_run

        params = {p.key: p.suggest(trial) for p in self.spec.space}
        config = self.spec.config(params)
        run_folder = RunFolder.of(self.out, config)
        trial.set_user_attr("run_id", config.run_id)
        trial.set_user_attr("run_dir", str(run_folder))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("job", job_id())
        wait_for_twins(trial, config.run_id)
        single = len(self.spec.objectives) == 1

        def on_eval(row: Mapping[str, Any]) -> None:
            if single:
                trial.report(row["val_acc"], row["step"])
                if trial.should_prune():
                    raise RunStopped(status="pruned")

        try:
            result = train_run(config, run_folder, on_eval=on_eval)
        except RunBusy:
            raise  # another process's run: its records are not this trial's to touch
        except RunStopped as stop:
            self.record(trial, run_folder, "PRUNED")
            raise optuna.TrialPruned(f"pruned by {self.spec.pruner['name']}") from stop
        except Exception:
            self.record(trial, run_folder, "FAIL")
            raise
        val_acc = result["final"].get("val_acc")
        if val_acc is None:  # a diverged run keeps its last finite metrics, if it had any
            self.record(trial, run_folder, "FAIL")
            raise RuntimeError(f"run {config.run_id} {result['status']} before its first "
                               "evaluation")
        values = {"val_acc": val_acc, "flops": result["flops"]}
        values = {name: values[name] for name in self.spec.objectives}
        self.record(trial, run_folder, "COMPLETE", values)
        return list(values.values())

    def record(self, trial: optuna.Trial, run_folder: RunFolder, state: str,
               values: dict[str, float] | None = None) -> None:
        """Add the trial to its run's result.json, so analysis can read the run folder
        without the study's storage. A run several trials ran (a retry) keeps the last."""
        try:
            result = run_folder.read_result()
        except (OSError, ValueError):
            return  # the run failed before writing its record
        result["trial"] = {"study": self.spec.name, "number": trial.number, "state": state,
                           **(values or {})}  # objective values by name, as trials_frame
        run_folder.write_result(result)


class StudyWorker(Requeueable):
    """One of the study's identical workers (a local process or a SLURM array task).

    On preemption or time-out submitit calls checkpoint(), which requeues this object; the
    requeued worker first fails and retries the trial it was running (the retry resumes the
    run from its checkpoint)."""

    def __init__(self, spec: StudySpec, url: str, out: str | Path, threads: int | None = None):
        self.spec, self.url, self.out, self.threads = spec, url, Path(out), threads
        self.trial_number: int | None = None  # the trial in progress, for a requeue

    def __call__(self, index: int | None = 0) -> dict[str, int]:
        """`index` (the sampler's stream) None: this worker is one task of a multi-node
        job, and its task rank is its index."""
        if index is None:
            import submitit

            from experiments.distributed import train_alone

            index = submitit.JobEnvironment().global_rank
            train_alone()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        study = open_study(self.spec, self.url, on_stale=retry)  # RDB: Optuna's heartbeat
        study.sampler = make_sampler(self.spec, stream=(index, len(study.trials)))
        if self.trial_number is not None:
            (trial,) = [t for t in study.get_trials(deepcopy=False)
                        if t.number == self.trial_number]
            if trial.state == TrialState.RUNNING:
                fail_and_retry(study, trial, "preempted: the worker was requeued; parameters "
                                             "retried", once=False)
            self.trial_number = None
        objective = TrialRun(self.spec, self.out)

        def tracked(trial: optuna.Trial):
            self.trial_number = trial.number  # checkpoint() pickles it before any unwinding
            try:
                return objective(trial)
            finally:
                self.trial_number = None

        def reap(study: optuna.Study) -> None:
            reap_dead_workers(study)
            if is_rdb(self.url):
                optuna.storages.fail_stale_trials(study)  # Optuna's heartbeat (also in optimize)
            else:
                reap_silent_trials(study, self.spec.stale_after_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return run_trials(study, tracked, self.spec.trials, reap)


def launch(spec: StudySpec, out: str | Path, executor: Executor, cluster: str = "local",
           workers: int = 1, profile_overrides: Mapping[str, Any] | None = None
           ) -> tuple[optuna.Study, str, list]:
    """Create (or resume) the study, record it in <out>/study.yaml and start `workers`
    workers (a SLURM array, local processes, or in-process for debug); returns the study,
    its storage URL and the submitit jobs.

    On an executor that spreads over nodes, a profile with `nodes` > 1 places the workers
    on different nodes: they go out as one SLURM job of that many nodes, workers/nodes
    tasks per node, each task a worker that trains its trials alone (an array's jobs land
    wherever the scheduler packs them)."""
    from experiments.locks import folder_lock
    from experiments.orchestration.cluster import load_profile

    if workers < 1:
        raise ConfigError(f"--workers={workers} must be >= 1")
    out = Path(out).resolve()
    url = storage_url(spec, out)
    effective = load_profile(cluster).with_overrides(profile_overrides or {})
    # The workers' submitit files go where the executor keeps its jobs', as a sweep's do.
    ex = executor.make(effective, executor.logs(out), name=f"study-{spec.name}")
    spread = executor.spreads_over_nodes and effective.nodes > 1
    if spread and workers % effective.nodes:
        raise ConfigError(f"--workers={workers} must be a multiple of cluster.nodes="
                          f"{effective.nodes}: the workers are spread evenly over the nodes")
    with folder_lock(out):  # trial run folders of an earlier version's ids are renamed
        migrate(out)
        study = open_study(spec, url, create=True)
        write_yaml(out / STUDY_FILE, {**spec.to_dict(), "storage": public_url(url)})
    worker = StudyWorker(spec, url, out, executor.threads(effective, workers))
    if spread:
        ex.update_parameters(tasks_per_node=workers // effective.nodes)
        return study, url, [ex.submit(worker, None)]
    return study, url, ex.map_array(worker, range(workers))
