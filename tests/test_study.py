"""Optuna studies: specs are checked before anything starts, and real workers (local
processes, a SLURM array, PostgreSQL) finish exactly the trials asked for, even when one is
killed mid-trial.

Trials are real training runs of a tiny Perceiver on a small cut of Fashion-MNIST (the
first 1024 training and 256 test images of Debian's files, written as IDX files), so each
takes a second or two.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import torch
import yaml
from conftest import skip_or_fail
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from experiments.cli import main
from experiments.orchestration import study as S
from experiments.orchestration import study_workers as W
from experiments.orchestration.executors import EXECUTORS
from experiments.records import read_json
from experiments.runfolder import CHECKPOINT
from perceiver_core.config import ConfigError

TINY = {"model": {"num_latents": 16, "latent_channels": 32, "num_blocks": 1,
                  "self_attends_per_block": 1, "num_cross_attends": 1, "latent_heads": 2},
        "encoding": {"num_bands": 4},
        "data": {"train_subset": 512, "val_size": 256},
        "train": {"max_steps": 20, "eval_every": 5, "batch_size": 32, "optimizer": "adamw",
                  "schedule": "constant", "epochs": 100, "warmup_steps": 0}}
LR = {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
STUDIES = Path(S.__file__).parents[1] / "studies"


def write_study(folder: Path, data_root: Path | None = None, **fields) -> Path:
    base = {**TINY, "data": {**TINY["data"], "root": str(data_root)}} if data_root else TINY
    content = {"base": base, "space": LR, "trials": 4, "pruner": "none", **fields}
    path = folder / f"{content.get('name', 'tiny')}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def trials_of(out: Path) -> list:
    return S.load_recorded(out).get_trials(deepcopy=False)


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.2):
    """condition()'s first true value."""
    deadline = time.time() + timeout_s
    while not (value := condition()):
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)
    return value


def dashboard_studies(storage: str) -> list[str]:
    """The studies `optuna-dashboard STORAGE` lists (its WSGI app, without a server)."""
    import optuna_dashboard

    environ = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    statuses = []
    app = optuna_dashboard.wsgi(storage)
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"]
    return [study["study_name"] for study in json.loads(body)["study_summaries"]]


def assert_exactly_complete(out: Path, trials: int) -> list:
    """`trials` COMPLETE trials of distinct configs, each a completed run in `out`; nothing
    left RUNNING or WAITING; no trial raised (a FAIL is a lost worker's, or a surplus
    trial that never ran)."""
    study = S.load_recorded(out)
    assert S.tally(study) == {"finished": trials, "running": 0, "waiting": 0, "failed": 0}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(complete) == trials
    run_ids = [t.user_attrs["run_id"] for t in complete]
    assert len(set(run_ids)) == trials
    for trial in complete:
        result = read_json(out / trial.user_attrs["run_id"] / "result.json")
        assert result["status"] == "completed" and result["step"] == 20
        assert trial.value == result["final"]["val_acc"] == trial.intermediate_values[20]
        if "retry_of" not in trial.user_attrs:  # a retry inherits what its run checkpointed
            assert sorted(trial.intermediate_values) == [5, 10, 15, 20]
    assert sorted(p.name for p in out.iterdir() if (p / "config.yaml").is_file()) == \
        sorted(run_ids)
    return complete


def signal_mid_trial(study, signum: int):
    """Send `signum` to the worker of the first running trial whose run has checkpointed;
    returns that trial."""
    def checkpointed():
        return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t.user_attrs.get("run_dir")
                     and (Path(t.user_attrs["run_dir"]) / CHECKPOINT).is_file()), None)

    trial = wait_until(checkpointed, 90, "a running trial with a checkpoint", poll_s=0.05)
    os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signum)
    return trial


# ----------------------------------------------------------------------------- specs

@pytest.mark.parametrize("fields, message", [
    ({"space": {"model.num_latent": {"type": "int", "low": 8, "high": 16}}},
     "unknown config key 'model.num_latent'"),
    ({"space": {"model.num_latents": {"type": "int", "low": 32, "high": 8}}},
     "space.model.num_latents: low=32 > high=8"),
    ({"space": {"train.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "space.train.lr: log scale needs low > 0"),
    ({"space": {"model.cross_attend_placement": {"type": "categorical", "choices": []}}},
     "space.model.cross_attend_placement: `choices` must be a non-empty list"),
    ({"space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "lo": 1}}},
     "space.train.lr: unknown key(s) ['lo']"),
    ({"space": LR, "sampler": "grid"}, "space.train.lr: a grid needs finitely many values"),
    ({"space": {"model.init_scale": {"type": "float", "low": 0.0, "high": 0.1}}},
     "space.model.init_scale: the value 0.0 cannot be built"),
    ({"space": {"model.num_latents": {"type": "float", "low": 8, "high": 16}}},
     "must be of type int"),
    ({"objective": ["val_acc", "flops"], "pruner": "median"}, "cannot prune multi-objective"),
    ({"sampler": {"name": "tpe", "n_startup": 3}}, "unknown option(s) ['n_startup'] for tpe"),
    ({"pruner": {"name": "median", "n_warmup_steps": -1}}, "pruner:"),
    ({"trials": 0}, "trials=0 must be >= 1"),
    ({"direction": "maximize"}, "unknown study key(s) ['direction']"),
    ({"space": {"train.lr": {"type": "float", "low": float("nan"), "high": 0.1}}},
     "space.train.lr.low=nan must be a finite number"),
    ({"space": {"train.lr": {"type": "float", "low": 1e-3, "high": float("inf")}}},
     "space.train.lr.high=inf must be a finite number"),
    ({"stale_after_s": float("inf")}, "stale_after_s=inf must be a finite number"),
    # the data sets' check (experiments/data/registry.py), on the base and the space's ends
    ({"base": {"data": {"name": "mnist"}}}, "data.name='mnist' is not one of"),
    ({"space": {"data.augment": {"type": "categorical", "choices": ["none", "bogus"]}}},
     "space.data.augment: the value 'bogus' cannot be built: data.augment='bogus' is not one"),
])
def test_bad_study_files_are_rejected_naming_the_key(tmp_path, fields, message):
    with pytest.raises(ConfigError) as error:
        S.load_study(write_study(tmp_path, **fields))
    assert message in str(error.value)


@pytest.mark.parametrize("text", ["", "# nothing yet\n"])
def test_an_empty_study_file_is_rejected_before_anything_is_written(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out)]) == 2
    assert f"{path}: the study file is empty" in capsys.readouterr().err
    assert not out.exists()


def test_bad_search_space_fails_before_any_worker_starts(tmp_path, capsys):
    bad = write_study(tmp_path, space={"train.lr": {"type": "float", "low": 0.1, "high": 0.01}})
    out = tmp_path / "out"
    assert main(["study", str(bad), "--workers", "2", "--out", str(out)]) == 2
    assert "space.train.lr: low=0.1 > high=0.01" in capsys.readouterr().err
    assert not out.exists()  # no storage, no record, no submitit folder: nothing started


def test_shipped_studies_load():
    specs = {p.stem: S.load_study(p) for p in sorted(STUDIES.glob("*.yaml"))}
    assert len(specs) >= 3
    kinds = {(s.sampler["name"], s.directions == ["maximize", "minimize"]) for s in
             specs.values()}
    assert {("tpe", False), ("grid", False), ("tpe", True)} <= kinds
    tpe = next(s for s in specs.values() if s.sampler["name"] == "tpe" and len(s.objectives) == 1)
    assert {"model.num_latents", "model.latent_channels", "encoding.num_bands",
            "encoding.max_resolution", "model.init_scale", "model.cross_attend_placement",
            "model.num_cross_attends", "train.lr"} <= {p.key for p in tpe.space}
    grid = next(s for s in specs.values() if s.sampler["name"] == "grid")
    assert grid.trials == len(S.make_sampler(grid)._all_grids)  # every point, once


def test_overrides_apply_to_the_base_but_not_to_searched_keys(tmp_path):
    path = write_study(tmp_path)
    spec = S.load_study(path, {"train.max_steps": 7}, trials=9)
    assert spec.config({"train.lr": 0.005}).train.max_steps == 7 and spec.trials == 9
    with pytest.raises(ConfigError, match="searched by `space:`"):
        S.load_study(path, {"train.lr": 0.1})


# ------------------------------------------------- worker machinery (with a fake objective)

def journal_study(tmp_path: Path, trials: int = 3, **fields) -> tuple[S.StudySpec, str]:
    spec = S.load_study(write_study(tmp_path, trials=trials, **fields))
    url = S.storage_url(spec, tmp_path)
    S.open_study(spec, url, create=True)
    return spec, url


def lr_objective(trial):
    return trial.suggest_float("train.lr", 1e-3, 1e-2, log=True)


def test_concurrent_workers_finish_exactly_the_trials_asked_for(tmp_path):
    """Zero-cost trials in 4 threads (each with its own storage object) race for the last
    slots as hard as they can; surplus trials are recorded but never run."""
    spec, url = journal_study(tmp_path, trials=7)
    ran = []

    def objective(trial):
        ran.append(trial.number)
        return lr_objective(trial)

    threads = [threading.Thread(target=W.run_trials, args=(
        S.open_study(spec, url), objective, 7, lambda s: None, 0.01)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = S.open_study(spec, url).get_trials()
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 7 and sorted(ran) == complete
    assert all(t.user_attrs["surplus"] for t in trials if t.state == TrialState.FAIL)


def test_seeded_workers_draw_different_points_but_agree_on_the_grid(tmp_path):
    spec = S.load_study(write_study(tmp_path, sampler={"name": "tpe", "seed": 3}))
    first = [optuna.create_study(sampler=S.make_sampler(spec, stream=(worker, 0))).ask()
             .suggest_float("train.lr", 1e-3, 1e-2, log=True) for worker in (0, 1)]
    assert first[0] != first[1]
    grid = S.load_study(write_study(tmp_path, sampler={"name": "grid", "seed": 3}, space={
        "model.num_latents": {"type": "int", "low": 8, "high": 64, "step": 8}}))
    assert S.make_sampler(grid, (0, 0))._all_grids == S.make_sampler(grid, (1, 5))._all_grids


def test_surplus_trial_is_recorded_but_not_run(tmp_path):
    spec, url = journal_study(tmp_path, trials=2)
    study = S.open_study(spec, url)
    study.ask(), study.ask()  # two trials running elsewhere already fill the study
    called = []
    study.optimize(W.guarded(called.append, 2), n_trials=1, catch=(Exception,))
    last = study.get_trials()[-1]
    assert called == [] and last.state == TrialState.FAIL and last.user_attrs["surplus"]
    assert S.tally(study) == {"finished": 0, "running": 2, "waiting": 0, "failed": 0}


def test_trial_that_raises_is_recorded_fail_with_its_error(tmp_path):
    spec, url = journal_study(tmp_path, trials=2)
    study = S.open_study(spec, url)

    def broken(trial):
        raise ValueError("no such luck")

    with pytest.raises(RuntimeError, match="2 trials failed"):
        W.run_trials(study, broken, 2, lambda s: None, 0.01)
    assert [(t.state, t.user_attrs["error"]) for t in study.get_trials()] == \
        [(TrialState.FAIL, "ValueError: no such luck")] * 2


def test_silent_trial_is_failed_and_its_parameters_retried_once(tmp_path):
    spec, url = journal_study(tmp_path, trials=1)
    study = S.open_study(spec, url)
    lost = study.ask()
    lost.suggest_float("train.lr", 1e-3, 1e-2, log=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lost.set_user_attr("run_dir", str(run_dir))
    time.sleep(0.6)  # the trial started longer ago than stale_after_s ...
    (run_dir / "result.json").write_text(f'{{"heartbeat": {time.time()}}}')
    assert W.reap_silent_trials(study, stale_after_s=0.5) == []  # ... but its run spoke now
    (run_dir / "result.json").write_text(f'{{"heartbeat": {time.time() - 60}}}')
    assert W.reap_silent_trials(study, stale_after_s=0.5) == [lost.number]
    assert W.reap_silent_trials(study, stale_after_s=0.5) == []  # failed once only

    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["lost"].startswith("stale")
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": 0}
    seen = []

    def objective(trial):
        seen.append(lr_objective(trial))
        return seen[-1]

    W.run_trials(study, objective, 1, lambda s: None)
    assert seen == [failed.params["train.lr"]]  # the same parameters, run again
    assert study.get_trials()[1].state == TrialState.COMPLETE

    again = study.ask()  # a retry that goes silent too is failed, not retried again
    again.set_user_attr("retry_of", 0)
    assert W.fail_and_retry(study, study.get_trials()[-1], "stale")
    assert [t.state for t in study.get_trials()][-1] == TrialState.FAIL
    assert S.tally(study)["waiting"] == 0


def test_twin_trial_waits_for_the_lower_one_on_the_same_run(tmp_path):
    spec, url = journal_study(tmp_path)
    study = S.open_study(spec, url)
    first, second = study.ask(), study.ask()
    first.set_user_attr("run_id", "abc")
    second.set_user_attr("run_id", "abc")
    threading.Timer(0.5, lambda: study.tell(first, 0.5)).start()
    started = time.time()
    W.wait_for_twins(second, "abc", poll_s=0.05)
    assert time.time() - started >= 0.4
    W.wait_for_twins(study.ask(), "xyz")  # another run: nothing to wait for


# ----------------------------------------------------------------------------- real runs

def test_two_local_workers_on_one_journal_finish_exactly_the_trials(tmp_path, tiny_fashion_mnist,
                                                                     capsys):
    path = write_study(tmp_path, tiny_fashion_mnist, name="pair")
    out = tmp_path / "out"
    assert main(["study", str(path), "--workers", "2", "--out", str(out), "--wait"]) == 0
    complete = assert_exactly_complete(out, 4)
    # The local executor's layout, as a sweep's: one submitit folder, a log pair per worker.
    logs = sorted(p.name for p in (out / "submitit").iterdir() if p.name.endswith("_log.err"))
    assert len(logs) == 2 and all((out / "submitit" / name).is_file() for name in logs), logs
    journal = out.resolve() / "study.journal"
    assert f"optuna-dashboard {journal}\n" in capsys.readouterr().out
    assert dashboard_studies(str(journal)) == ["pair"]

    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].startswith("study pair") and "4/4 finished" in status[0]
    best = max(t.value for t in complete)  # ties are all best (Optuna's best_trials)
    assert [line.split()[1] for line in status if line.startswith("*")] == \
        [str(t.number) for t in complete if t.value == best]

    from analysis.results import load_results

    runs = load_results(out)  # the analysis table carries the trial columns
    assert len(runs) == 4 and (runs["trial.state"] == "COMPLETE").all()
    assert (runs["trial.val_acc"] == runs["final.val_acc"]).all()
    for trial in complete:  # each run folder says which trial it was, without the storage
        record = read_json(out / trial.user_attrs["run_id"] / "result.json")["trial"]
        assert record == {"study": "pair", "number": trial.number, "state": "COMPLETE",
                          "val_acc": trial.value}

    # The same command with more trials resumes the study: one more trial, nothing redone.
    assert main(["study", str(path), "--workers", "2", "--out", str(out), "--trials", "5",
                 "--wait"]) == 0
    resumed = assert_exactly_complete(out, 5)
    assert [(t.number, t.params) for t in resumed[:4]] == [(t.number, t.params) for t in complete]


def test_killed_worker_leaves_a_failed_trial_and_the_study_completes(tmp_path, tiny_fashion_mnist):
    """A local worker's death is seen from its pid as soon as the other worker looks (it
    polls every 2 s while idle, or looks after its own trial), not after stale_after_s."""
    trials = 2
    spec = S.load_study(write_study(tmp_path, tiny_fashion_mnist, trials=trials,
                                    stale_after_s=600))
    out = tmp_path / "out"
    study, _, jobs = W.launch(spec, out, executor=EXECUTORS["local"], workers=2)

    victim = signal_mid_trial(study, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: study.get_trials()[victim.number].state == TrialState.FAIL, 90,
               "the dead worker's trial to be failed")
    noticed_s = time.time() - killed_at
    assert noticed_s < 90 < spec.stale_after_s
    print(f"\nkilled worker's trial failed {noticed_s:.1f} s after the kill")

    wait_until(lambda: S.tally(study)["finished"] >= trials and all(j.done() for j in jobs),
               120, "the surviving worker to finish the study")
    killed = study.get_trials()[victim.number]
    pid = victim.user_attrs["worker"].rsplit(":", 1)[1]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["lost"].startswith(f"worker gone: its process {pid} on ")
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["run_id"] == killed.user_attrs["run_id"]
    assert_exactly_complete(out, trials)
    run_dir = out.resolve() / retry.user_attrs["run_id"]
    assert any(f"resumed {run_dir} at step" in job.stderr() for job in jobs)


def test_preempted_worker_requeues_and_retries_its_trial(tmp_path, tiny_fashion_mnist):
    """USR2 is SLURM's (and the local executor's) warning before preemption or the time
    limit: submitit calls checkpoint(), the worker is requeued and first retries the trial
    it was running (here the other worker may take the retry), which resumes the run from
    its checkpoint."""
    spec = S.load_study(write_study(tmp_path, tiny_fashion_mnist, trials=1))
    out = tmp_path / "out"
    study, _, jobs = W.launch(spec, out, executor=EXECUTORS["local"], workers=2)

    victim = signal_mid_trial(study, signal.SIGUSR2)
    wait_until(lambda: all(j.done() for j in jobs), 120, "the workers to finish the study")

    assert [j.result() for j in jobs] == [{"finished": 1, "running": 0, "waiting": 0,
                                           "failed": 0}] * 2
    assert sum("Caught signal SIGUSR2" in j.stderr() for j in jobs) == 1
    run_dir = out.resolve() / victim.user_attrs["run_id"]
    assert any(f"resumed {run_dir} at step" in j.stderr() for j in jobs)  # its checkpoint
    preempted = study.get_trials()[victim.number]
    assert preempted.state == TrialState.FAIL  # by the requeued worker, first thing:
    assert preempted.user_attrs["lost"].startswith("preempted")
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == preempted.params
    assert_exactly_complete(out, 1)


def test_median_pruner_stops_a_trial_that_learns_nothing(tmp_path, tiny_fashion_mnist):
    """Two trials with working learning rates, then one with lr=1e-7: at step 10, the end
    of the warm-up, it is below the median of the others and is pruned there."""
    path = write_study(tmp_path, tiny_fashion_mnist, trials=3,
                       space={"train.lr": {"type": "float", "low": 1e-8, "high": 1e-1,
                                           "log": True}},
                       pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 10})
    spec = S.load_study(path)
    url = S.storage_url(spec, tmp_path / "out")
    study = S.open_study(spec, url, create=True)
    for lr in (1e-2, 5e-3, 1e-7):
        study.enqueue_trial({"train.lr": lr})
    threads = torch.get_num_threads()
    try:  # this process as the worker, on one thread like a worker of a 2-worker study
        W.StudyWorker(spec, url, tmp_path / "out", threads=1)()
    finally:
        torch.set_num_threads(threads)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    pruned = study.get_trials()[2]
    assert sorted(pruned.intermediate_values) == [5, 10]
    result = read_json(Path(pruned.user_attrs["run_dir"]) / "result.json")
    assert result["status"] == "pruned" and result["step"] == 10
    assert result["trial"] == {"study": "tiny", "number": 2, "state": "PRUNED"}


def test_pareto_study_of_accuracy_and_flops(tmp_path, tiny_fashion_mnist):
    path = write_study(tmp_path, tiny_fashion_mnist, trials=2, objective=["val_acc", "flops"],
                       sampler="grid", space={"model.num_latents": {
                           "type": "categorical", "choices": [8, 32]}})
    spec = S.load_study(path)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:  # the debug executor: one worker in this process (on one thread, like the others)
        torch.set_num_threads(1)
        assert main(["study", str(path), "--out", str(out), "--executor", "debug"]) == 0
    finally:
        torch.set_num_threads(threads)
    trials = sorted(trials_of(out), key=lambda t: t.params["model.num_latents"])
    assert spec.directions == ["maximize", "minimize"]
    flops = [read_json(out / t.user_attrs["run_id"] / "result.json")["flops"] for t in trials]
    assert [t.values[1] for t in trials] == flops and flops[0] < flops[1]
    assert all(t.intermediate_values == {} for t in trials)  # no pruning, so no reports
    small, large = trials  # the small model has fewer FLOPs: it is on the Pareto front
    front = {small.number} | ({large.number} if large.values[0] > small.values[0] else set())
    assert set(S.trials_frame(out).query("`trial.best`")["trial.number"]) == front


@pytest.mark.slurm
def test_two_workers_as_a_slurm_array_finish_exactly_the_trials(tmp_path, tiny_fashion_mnist,
                                                                capsys):
    path = write_study(tmp_path, tiny_fashion_mnist, name="slurm-pair")
    out = tmp_path / "out"
    assert main(["study", str(path), "--executor", "slurm", "--cluster", "local",
                 "--workers", "2", "--out", str(out), "--wait"]) == 0
    array = re.search(r"2 slurm worker\(s\) \((\d+)_0, \1_1\)", capsys.readouterr().out)
    assert array, "the workers were not submitted as one array of two"
    complete = assert_exactly_complete(out, 4)
    assert {t.user_attrs["job"] for t in complete} <= {f"{array[1]}_0", f"{array[1]}_1"}


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a Unix socket in a temporary folder (as the
    `postgres` user when run as root: the server refuses to run as root)."""
    pg_ctls = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not pg_ctls:
        skip_or_fail("PostgreSQL is not installed: run `apt-get install postgresql` or "
                     "`make test`")
    bin_dir = pg_ctls[-1].parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    if as_postgres:
        shutil.chown(root, "postgres")

    def pg(tool, *args):
        done = subprocess.run([*as_postgres, str(bin_dir / tool), *map(str, args)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{tool} failed: {done.stderr}", pytrace=False)

    pg("initdb", "-D", root / "data", "-A", "trust", "-U", "postgres", "--no-sync")
    pg("pg_ctl", "-D", root / "data", "-l", root / "log", "-w",
       "-o", f"-k {root} -c listen_addresses='' -F", "start")
    try:
        pg("createdb", "-h", root, "-U", "postgres", "studies")
        yield f"postgresql+psycopg2://postgres@/studies?host={root}"
    finally:
        pg("pg_ctl", "-D", root / "data", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_on_postgresql_finish_the_study_despite_a_killed_one(
        tmp_path, tiny_fashion_mnist, postgres_url):
    """On an RDB, Optuna's own heartbeat notices the killed worker's trial."""
    trials = 3
    path = write_study(tmp_path, tiny_fashion_mnist, name="pg-pair", trials=trials, stale_after_s=4)
    out = tmp_path / "out"
    with_password = postgres_url.replace("postgres@", "postgres:secret@")  # trust: ignored
    spec = S.load_study(path, storage=with_password)
    study, _, jobs = W.launch(spec, out, executor=EXECUTORS["local"], workers=2)
    victim = signal_mid_trial(study, signal.SIGKILL)
    wait_until(lambda: S.tally(study)["finished"] >= trials and all(j.done() for j in jobs),
               120, "the surviving worker to finish the study")

    assert_exactly_complete(out, trials)
    assert study.get_trials()[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    # The record names the storage without its password; status and the dashboard read it.
    recorded = yaml.safe_load((out / "study.yaml").read_text())["storage"]
    assert "secret" not in recorded and make_url(recorded) == make_url(postgres_url)
    assert f"{trials}/{trials} finished" in S.study_status(out)
    assert dashboard_studies(postgres_url) == ["pg-pair"]
