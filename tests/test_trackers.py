"""The tools researchers already use (issue 28), on one small real sweep: TensorBoard event
files read back by TensorBoard's own reader and its HParams page seen in headless Chromium,
an export to a real MLflow server on PostgreSQL, and the notebook example of
docs/notebook.md executed as written."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from conftest import skip_or_fail  # noqa: E402
from test_study import postgres_url  # noqa: E402, F401  (the fixture, for the MLflow store)
from test_sweep import TINY_BASE  # noqa: E402
from test_train import KILLER  # noqa: E402

from experiments.cli import main  # noqa: E402
from experiments.config import load_config  # noqa: E402
from experiments.records import read_json, read_jsonl, write_json  # noqa: E402
from experiments.runfolder import (  # noqa: E402
    CONFIG,
    METRICS,
    RESULT,
    RunFolder,
    read_manifest,
    run_folders,
)
from experiments.tensorboard import EVENTS  # noqa: E402
from experiments.train import train_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_fashion_mnist) -> Path:
    """Four real runs (two latent counts x two seeds) trained in this process."""
    folder = tmp_path_factory.mktemp("trackers")
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "root": str(tiny_fashion_mnist)},
            "train": {**TINY_BASE["train"], "max_steps": 10, "eval_every": 5}}
    path = folder / "latents.yaml"
    path.write_text(yaml.safe_dump({"base": base, "grid": {"model.num_latents": [8, 16]},
                                    "seeds": [0, 1]}, sort_keys=False))
    out = folder / "latents"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out)]) == 0
    return out


def accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / EVENTS).iterdir()  # one labelled folder per run
    reader = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return events.name, reader


def scalars_of(reader) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)]
            for tag in reader.Tags()["scalars"]}


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl (and result.json's test metrics at the last step), tag by tag."""
    expected: dict[str, list] = {}
    for row in read_jsonl(run_dir / METRICS):
        for key, value in row.items():
            if key != "step" and value is not None:
                expected.setdefault(key, []).append((row["step"], value))
    result = read_json(run_dir / RESULT)
    for key, value in result["final"].items():
        if key.startswith("test_"):
            expected[key] = [(result["step"], value)]
    return expected


def assert_same_scalars(found: dict, expected: dict) -> None:
    assert sorted(found) == sorted(expected)
    for tag, points in expected.items():
        assert [s for s, _ in found[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in found[tag]], [v for _, v in points],
                                   rtol=1e-6, err_msg=tag)  # event files hold float32


def session_hparams(reader) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = reader.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    end = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_end_info"]).session_end_info
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
              for k, v in start.hparams.items()}
    return {"hparams": values, "group": start.group_name, "status": end.status}


def test_every_run_has_event_files_equal_to_its_metrics(sweep):
    from tensorboard.plugins.hparams import api_pb2

    params = {r["run_id"]: r["params"] for r in read_manifest(sweep)["runs"]}
    folders = [run.path for run in run_folders(sweep)]
    assert len(folders) == 4
    for run_dir in folders:
        label, reader = accumulator(run_dir)
        config = load_config(run_dir / CONFIG, [])
        latents = params[run_dir.name]["model.num_latents"]
        assert label == f"num_latents={latents} seed={config.train.seed}"
        expected = expected_scalars(run_dir)
        assert {"train_loss", "lr", "samples_per_s", "val_acc", "test_acc"} <= set(expected)
        assert_same_scalars(scalars_of(reader), expected)
        session = session_hparams(reader)
        assert session["hparams"]["model.num_latents"] == latents
        assert session["hparams"]["train.seed"] == config.train.seed
        assert session["hparams"]["data.root"] == config.data.root
        assert session["group"] == f"{label} [{run_dir.name}]"
        assert session["status"] == api_pb2.Status.Value("STATUS_SUCCESS")


def test_killed_and_resumed_run_has_no_duplicate_step(tmp_path, tiny_fashion_mnist):
    """A real SIGKILL after the evaluation of step 12 and the checkpoint of step 10: the
    events of step 12 are on disk; the resumed run recomputes that step, once."""
    overrides = {f"{section}.{key}": value for section, values in TINY_BASE.items()
                 for key, value in values.items()}
    overrides.update({"data.root": str(tiny_fashion_mnist), "train.max_steps": 16,
                      "train.eval_every": 4, "train.checkpoint_every": 5})
    run_dir = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=12, overrides=overrides),
                           str(run_dir)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _, before = accumulator(run_dir)
    assert [s for s, _ in scalars_of(before)["val_loss"]] == [4, 8, 12]

    result = train_run(load_config(None, overrides), run_dir)
    assert result["status"] == "completed"
    assert len(list((run_dir / EVENTS).rglob("events.out.tfevents.*"))) == 1
    _, after = accumulator(run_dir)
    found = scalars_of(after)
    assert [s for s, _ in found["val_loss"]] == [4, 8, 12, 16]
    assert_same_scalars(found, expected_scalars(run_dir))


def test_export_tensorboard_rebuilds_events_from_the_records(sweep, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(sweep, old, ignore=shutil.ignore_patterns(EVENTS))
    assert not list(old.rglob("events.out.tfevents.*"))
    for _ in range(2):  # idempotent: the second export rebuilds the same files
        assert main(["export", "tensorboard", str(old)]) == 0
    assert "wrote TensorBoard events of 4 run(s)" in capsys.readouterr().out
    for run_dir in (run.path for run in run_folders(old)):
        label, reader = accumulator(run_dir)
        original_label, original = accumulator(sweep / run_dir.name)
        assert label == original_label
        assert_same_scalars(scalars_of(reader), scalars_of(original))
        assert session_hparams(reader) == session_hparams(original)
    from tensorboard.plugins.hparams import api_pb2

    run_dir = next(run_folders(old)).path  # a run that ended otherwise shows its status
    for status, shown in (("pruned", "STATUS_UNKNOWN"), ("failed", "STATUS_FAILURE")):
        write_json(run_dir / RESULT, {**read_json(run_dir / RESULT), "status": status})
        assert main(["export", "tensorboard", str(old)]) == 0
        assert session_hparams(accumulator(run_dir)[1])["status"] == api_pb2.Status.Value(shown)
    assert main(["export", "tensorboard", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float, log: Path,
             ready=lambda body: True) -> bytes:
    """GET url until it answers and `ready(body)`; fails (with the server's log) when the
    server exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read()
                if ready(body):
                    return body
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout_s:.0f} s: {log.read_text()[-2000:]}")


class Server:
    """A server process in its own process group, on 127.0.0.1, stopped on exit."""

    def __init__(self, argv: list[str], log: Path):
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


def test_tensorboard_hparams_page_shows_one_row_per_run(sweep, tmp_path, browser):
    port = free_port()
    labels = sorted(f"num_latents={n} seed={s}" for n in (8, 16) for s in (0, 1))
    with Server([str(BIN / "tensorboard"), "--logdir", str(sweep), "--host", "127.0.0.1",
                 "--port", str(port), "--reload_interval", "1"], tmp_path / "tb.log") as tb:
        url = f"http://127.0.0.1:{port}"
        runs = wait_for(f"{url}/data/runs", tb.proc, 60, tb.log,
                        ready=lambda body: body.count(b"num_latents=") == 4)
        assert sorted(re.findall(r"num_latents=\d+ seed=\d", runs.decode())) == labels
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/#hparams")
        rows = {label: page.get_by_text(f"{label} [", exact=False).first
                for label in labels}
        for row in rows.values():
            row.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)  # let the table settle before the picture
        boxes = {label: row.bounding_box() for label, row in rows.items()}
        shot = tmp_path / "hparams.png"
        page.screenshot(path=str(shot))
        columns = [page.get_by_text(key, exact=True).count() for key in
                   ("model.num_latents", "train.seed", "val_acc", "test_acc")]
    from PIL import Image

    assert all(columns), columns  # the knobs and the final metrics are columns
    pixels = np.asarray(Image.open(shot).convert("L")).astype(int)
    tops = sorted(int(box["y"]) for box in boxes.values())
    assert all(b - a >= 10 for a, b in zip(tops, tops[1:], strict=False)), boxes  # 4 rows
    # Each run's row, from its Trial ID cell to the right edge (the cell is cut to its
    # start, the same for both seeds; the knob columns tell the rows apart).
    height = int(min(box["height"] for box in boxes.values()))
    stripes = []
    for label, box in boxes.items():
        x0, y0 = int(box["x"]), int(box["y"])
        stripe = pixels[y0:y0 + height, x0:]
        assert stripe.shape[0] == height, f"the row of {label} is outside the screenshot"
        assert (stripe < 128).sum() > 200, f"no text drawn in the row of {label}"
        stripes.append(stripe)
    assert all(not np.array_equal(a, b) for i, a in enumerate(stripes)
               for b in stripes[i + 1:]), "two rows draw the same pixels"


@pytest.mark.postgres
def test_mlflow_export_to_a_server_on_postgresql(sweep, tmp_path, postgres_url, capsys):  # noqa: F811
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        skip_or_fail("mlflow missing: `pip install -e .[dev]` (or .[mlflow]) or `make test`")

    from analysis.report.index import write_report

    write_report(sweep)  # verdicts and index.html: the report's artifacts
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with Server([str(BIN / "mlflow"), "server", "--backend-store-uri", postgres_url,
                 "--artifacts-destination", str(tmp_path / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                tmp_path / "mlflow.log") as server:
        started = time.monotonic()
        wait_for(f"{uri}/health", server.proc, 120, server.log)
        up = time.monotonic()
        argv = ["export", "mlflow", str(sweep), "--tracking-uri", uri, "--experiment", "lat"]
        assert main(argv) == 0
        with capsys.disabled():
            print(f"\nMLflow server on PostgreSQL up in {up - started:.1f}s; first export "
                  f"{time.monotonic() - up:.1f}s")
        out = capsys.readouterr().out
        assert "4 new run(s), 0 updated, 0 unchanged" in out and "report: new" in out
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("lat")
        runs = client.search_runs([experiment.experiment_id])
        by_id = {r.data.tags["perceiver.run_id"]: r for r in runs}
        assert sorted(by_id) == sorted([*(run.id for run in run_folders(sweep)), "report"])
        for run_dir in (run.path for run in run_folders(sweep)):
            run = by_id[run_dir.name]
            config = load_config(run_dir / CONFIG, [])
            assert run.info.status == "FINISHED"
            assert run.data.params["model.num_latents"] == str(config.model.num_latents)
            assert run.data.params["data.root"] == config.data.root
            assert run.data.tags["perceiver.seed"] == str(config.train.seed)
            assert run.data.tags["perceiver.status"] == "completed"
            assert run.data.tags["perceiver.sweep"] == sweep.name
            expected = expected_scalars(run_dir)
            for key in ("val_acc", "train_loss", "test_acc"):
                history = sorted((m.step, m.value) for m in client.get_metric_history(
                    run.info.run_id, key))
                assert history == expected[key], key
        artifacts = {a.path for a in client.list_artifacts(by_id["report"].info.run_id)}
        assert artifacts == {"verdicts.md", "verdicts.json", "index.html"}

        assert main(argv) == 0  # again: nothing new
        out = capsys.readouterr().out
        assert "0 new run(s), 0 updated, 4 unchanged" in out and "report: unchanged" in out
        assert len(client.search_runs([experiment.experiment_id])) == 5

        # An export cut short leaves a run without its fingerprint (set last): replaced.
        client.delete_tag(by_id[next(run_folders(sweep)).id].info.run_id,
                          "perceiver.fingerprint")
        assert main(argv) == 0
        assert "0 new run(s), 1 updated, 3 unchanged" in capsys.readouterr().out
        assert len(client.search_runs([experiment.experiment_id])) == 5

        changed = next(run_folders(sweep)).path  # a run whose record changed is replaced, once
        record = read_json(changed / RESULT)
        try:
            write_json(changed / RESULT, {**record, "status": "failed"})
            assert main(argv) == 0
        finally:
            write_json(changed / RESULT, record)
        assert "0 new run(s), 1 updated, 3 unchanged" in capsys.readouterr().out
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 5
        (replaced,) = [r for r in runs if r.data.tags["perceiver.run_id"] == changed.name]
        assert replaced.info.status == "FAILED" and replaced.data.tags["perceiver.status"] == \
            "failed"

    # The server is gone: a clear one-line error, exit status 2.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and uri in err


def test_mlflow_missing_is_a_clear_error(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    assert main(["export", "mlflow", str(sweep), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "pip install 'perceiver-ablate[mlflow]'" in capsys.readouterr().err


def notebook_blocks() -> list[str]:
    text = (ROOT / "docs" / "notebook.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_notebook_example_runs_as_documented(sweep, tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    blocks = notebook_blocks()
    assert len(blocks) >= 4
    code = "\n".join(blocks)
    assert code.count('"results/demo/runs"') == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace('"results/demo/runs"', repr(str(sweep))), "notebook.md", "exec"),
         namespace)
    assert len(namespace["runs"]) == 4 and set(namespace["runs"]["status"]) == {"completed"}
    assert list(namespace["by_latents"]["count"]) == [2, 2]
    assert len(namespace["last"]) == 4 and set(namespace["last"]["step"]) == {10}
    effects = namespace["effects"]
    (row,) = effects.itertuples()
    # Two seeds a level are below the verdicts' minimum: an effect, no interval, and why.
    assert row.knob == "model.num_latents" and row.verdict == "too few seeds (2)"
    assert math.isfinite(row.effect) and math.isnan(row.low) and math.isnan(row.high)
    assert isinstance(namespace["figure"], Figure)
    assert (tmp_path / "forest.png").stat().st_size > 1000
    assert "test accuracy" in capsys.readouterr().out


def test_a_database_that_does_not_answer_is_one_line_without_the_password(sweep, capsys):
    try:
        import mlflow  # noqa: F401
    except ImportError:
        skip_or_fail("mlflow missing: `pip install -e .[dev]` (or .[mlflow]) or `make test`")
    port = free_port()  # nothing listens there
    uri = f"postgresql+psycopg2://postgres:secret@127.0.0.1:{port}/mlflow"
    started = time.monotonic()
    assert main(["export", "mlflow", str(sweep), "--tracking-uri", uri]) == 2
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not answer" in err
    assert f"postgres@127.0.0.1:{port}" in err and "secret" not in err


def test_labels_name_a_study_s_searched_keys_or_the_config_s_own(tmp_path):
    from experiments.tensorboard import MAX_LABEL, knob_label, run_label

    cfg = load_config(None, {"model.num_latents": 16, "train.lr": 0.01, "train.seed": 3,
                             "data.train_subset": 256})
    alone = run_label(RunFolder.of(tmp_path / "train", cfg), cfg)  # what it sets off the defaults
    assert alone.startswith("num_latents=16 ") and " lr=0.01 " in alone
    assert alone.endswith(" seed=3") and "train_subset" not in alone  # data keys aside
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump(
        {"name": "s", "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-1}}}))
    assert run_label(RunFolder.of(study, cfg), cfg) == "lr=0.01 seed=3"
    long = knob_label({f"model.key{i}": "/value" * 5 for i in range(20)})
    assert len(long.encode()) <= MAX_LABEL and "/" not in long
    assert long != knob_label({f"model.key{i}": "/value" * 5 for i in range(21)})
