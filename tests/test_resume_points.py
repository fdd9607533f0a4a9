"""Resuming is exact wherever a run stops (the long soak's open finding, docs/run-identity.md,
"Soak under faults"): a run stopped at each record write of an evaluation step, by a kill
(no record of the stop) or by a full disk (RecordWriteError, `failed` recorded), and then
trained again, and a study trial killed mid-run and retried, end at the metrics of the
same config trained without a stop. The kill is simulated in-process by an exception that
train_run does not catch (a BaseException), so no record is written after it, as after a
SIGKILL; the run lock is released as the kernel releases a dead process's flock."""

from __future__ import annotations

import errno

import pytest
from test_soak import SOAK_BASE
from test_study import write_study

import experiments.train as T
from experiments.orchestration import study as S
from experiments.orchestration import study_workers as W
from experiments.records import RecordWriteError, read_json
from experiments.runfolder import RESULT, RunFolder


class Killed(BaseException):
    """The process died here: nothing after this point runs, nothing is recorded."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_fashion_mnist):
    folder = tmp_path_factory.mktemp("spec")
    return S.load_study(write_study(folder, tiny_fashion_mnist, trials=2, base={
        **SOAK_BASE, "data": {**SOAK_BASE["data"], "root": str(tiny_fashion_mnist)}}))


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    cfg = spec.config({"train.lr": 0.0023})
    return cfg, T.train_run(cfg, tmp_path_factory.mktemp("reference") / cfg.run_id)


def final(result: dict) -> tuple:
    return tuple(result["final"][k] for k in ("val_acc", "val_loss", "train_loss", "test_acc"))


def stop_once(monkeypatch, owner, name: str, at_step: int, error: BaseException) -> None:
    """Make owner.name raise `error` the first time it runs at the run's step `at_step`."""
    original, stopped = getattr(owner, name), []
    step = {"now": 0}
    evaluate = T.Run.evaluate_and_record

    def tracked(self, lr):
        step["now"] = self.progress.step
        return evaluate(self, lr)

    def stopping(*args, **kwargs):
        if not stopped and step["now"] == at_step:
            stopped.append(True)
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(T.Run, "evaluate_and_record", tracked)
    monkeypatch.setattr(owner, name, stopping)


@pytest.mark.parametrize("stop", ["kill", "full disk"])
@pytest.mark.parametrize("at_step", [5, 10])
@pytest.mark.parametrize("write", ["append_metrics", "save_checkpoint", "write_result"])
def test_a_run_stopped_at_any_record_write_resumes_exactly(reference, tmp_path, monkeypatch,
                                                           write, at_step, stop):
    cfg, unstopped = reference
    error = Killed() if stop == "kill" else RecordWriteError(errno.ENOSPC, "no space left")
    with monkeypatch.context() as patch:
        stop_once(patch, RunFolder if write == "append_metrics" else T.Run, write, at_step,
                  error)
        with pytest.raises(type(error)):
            T.train_run(cfg, tmp_path / cfg.run_id)
    stopped = read_json(tmp_path / cfg.run_id / RESULT)
    assert stopped["status"] == ("running" if stop == "kill" else "failed")
    resumed = T.train_run(cfg, tmp_path / cfg.run_id)
    assert resumed["status"] == "completed" and len(resumed["sessions"]) == 2
    assert final(resumed) == final(unstopped)


def test_a_killed_trial_retried_resumes_its_run_exactly(spec, tmp_path, monkeypatch):
    """The soak's path: a worker dies mid-trial (after the checkpoint of step 5), the trial
    is failed and retried, and the retry resumes the run from that checkpoint."""
    study = S.open_study(spec, str(tmp_path / "study.journal"), create=True)
    objective = W.TrialRun(spec, tmp_path / "out")
    with monkeypatch.context() as patch:
        stop_once(patch, T, "train_step", 5, Killed())  # in step 6
        trial = study.ask()
        with pytest.raises(Killed):
            objective(trial)
    killed = study.get_trials()[trial.number]
    assert W.fail_and_retry(study, killed, "killed")
    retried = study.ask()
    assert retried.user_attrs.get("retry_of") == trial.number
    objective(retried)
    run_dir = tmp_path / "out" / killed.user_attrs["run_id"]
    result = read_json(run_dir / RESULT)
    assert [s["from_step"] for s in result["sessions"]] == [0, 5]
    cfg = spec.config(killed.params)
    assert final(result) == final(T.train_run(cfg, tmp_path / "fresh" / cfg.run_id))
