"""Reports safe to open and every run accounted for (issue 30, parts 1 and 2).

A real sweep folder on real Fashion-MNIST: 4 runs trained from a data root named
`<img src=x onerror=alert(1)>` (a legal directory name) and 4 runs whose data root holds
corrupt files, so they fail; then hostile strings in every other field that reaches a
report (a run folder's name, knob values, error text, a host name, Markdown
and HTML syntax, a very long string, control characters, bytes of a log that are not
UTF-8) and a run killed without a word (`interrupted`). `figures` writes index.html, which
headless Chromium opens with every request intercepted: no dialog, no script, no request
leaves the page, and each hostile string is shown as text.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_results_keep import TINY_BASE

from analysis.markup import LIMIT, literal, visible
from analysis.report.html import render
from analysis.report.index import file_name
from experiments.cli import main
from experiments.records import read_json, write_json, write_yaml
from experiments.runfolder import CONFIG, RESULT

ROOT_NAME = "<img src=x onerror=alert(1)>"
BAD_NAME = "bad [x](javascript:alert(8)) *b* `c`"
HOSTILE = {  # field -> a string that must be shown as it is, never run or followed
    "knob": "<script>alert(2)</script>",
    "markdown": "![pixel](http://127.0.0.1:9/pixel.png) [click](javascript:alert(3)) _em_ | ~x~",
    "host": "<svg onload=alert(4)>",
    "error": "RuntimeError: <iframe src=http://127.0.0.1:9/></iframe> & &lt;b&gt;",
}
LONG = "<b>" + "x" * 20000
CONTROL = "red\x1b[31m text\u202eevil\x00"
LOG_BYTES = b"\xff\xfe<script>alert(6)</script>\x1b[2J"
RUN_DIR = "'\"><img src=x onerror=alert(7)>"


def sweep_file(path: Path, data_root: Path, seeds: list[int], description: str) -> Path:
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "root": str(data_root)}}
    path.write_text(yaml.safe_dump({"description": description, "base": base,
                                    "grid": {"model.num_latents": [4, 8]}, "seeds": seeds}))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_fashion_mnist) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    good = shutil.copytree(tiny_fashion_mnist, tmp / ROOT_NAME)
    bad = tmp / BAD_NAME
    bad.mkdir()
    for name in os.listdir(good):
        (bad / name).write_bytes(b"not a gzip file")
    out = tmp / "sweep"
    for name, root, seeds, code in ((f"{ROOT_NAME}.yaml", good, [0, 1], 0),
                                    (f"{HOSTILE['markdown'][:20]}.yaml", bad, [2, 3], 1)):
        spec = sweep_file(tmp / name.replace("/", "_"), root, seeds, HOSTILE["knob"])
        assert main(["sweep", str(spec), "--out", str(out), "--executor", "local",
                     "--wait"]) == code  # 1: some runs failed
    return out


def hand_made(out: Path, name: str, template: Path, result: dict, **config) -> Path:
    """A run folder as a copied or hand-edited folder can hold it."""
    content = yaml.safe_load((template / CONFIG).read_text())
    for key, value in config.items():
        content["data"][key] = value
    write_yaml(out / name / CONFIG, content)
    write_json(out / name / RESULT, {**read_json(template / RESULT), "run_id": name, **result})
    return out / name


def add_hostile_records(out: Path) -> None:
    """What a copied, hand-edited or half-killed folder can hold besides the sweep."""
    done = sorted(p.parent for p in out.glob(f"*/{RESULT}"))
    write_json(done[0] / RESULT, {**read_json(done[0] / RESULT), "host": HOSTILE["host"]})
    hand_made(out, "failed-by-hand", done[0], {
        "status": "failed", "error": f"Traceback\n{HOSTILE['error']}"}, augment="crop")
    hand_made(out, "failed-long", done[0], {
        "status": "failed", "error": f"first line\n{CONTROL} {LONG}"}, augment="randaugment")
    # a run killed without a chance to write: its process is gone, its record says running
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hand_made(out, RUN_DIR, done[0], {
        "status": "running", "heartbeat": time.time(),
        "sessions": [{"host": socket.gethostname(), "pid": dead.pid, "from_step": 0,
                      "to_step": 2, "nodes": ["x"], "started_at": "-", "status": "running"}]},
        augment=HOSTILE["knob"] + HOSTILE["markdown"])
    # a job that died with bytes in its log that are not UTF-8
    logged = hand_made(out, "logged", done[0], {"status": "running"}, augment="none")
    logs = out / "submitit" / "logged"
    logs.mkdir(parents=True)
    (logs / "log.out").write_text("submitit INFO - Starting with JobEnvironment\n")
    (logs / "log.err").write_bytes(b"Traceback (most recent call last):\n  x\n" + LOG_BYTES)
    with (logs / "result.pkl").open("wb") as f:
        pickle.dump(("error", "Traceback ..."), f)
    manifest = read_json(out / "sweep.json")
    manifest["runs"].append({"run_id": logged.name, "params": {}, "config": None})
    manifest["submissions"].append({**manifest["submissions"][-1], "jobs": [{
        "job_id": "1", "run_ids": [logged.name], "stdout": "submitit/logged/log.out",
        "stderr": "submitit/logged/log.err", "result": "submitit/logged/result.pkl"}]})
    write_json(out / "sweep.json", manifest)


def test_a_sweep_with_4_failed_runs_is_counted_as_such(folder, capsys):
    assert main(["status", str(folder)]) == 0
    assert "8 runs: 4 completed, 4 failed" in capsys.readouterr().out
    assert main(["verdicts", str(folder), "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert verdicts["headline"] == "8 runs: 4 completed, 4 failed"
    failed = [r for r in verdicts["runs"] if r["state"] == "failed"]
    assert len(failed) == 4 and all("not a readable gzip file" in r["error"] for r in failed)
    assert all(f"data.root={Path(folder).parent / BAD_NAME}" in r["config"] for r in failed)


@pytest.fixture(scope="module")
def report(folder) -> Path:
    add_hostile_records(folder)
    assert main(["figures", str(folder)]) == 0
    return folder / "figures" / "index.html"


def test_every_run_by_state_in_figures_verdicts_and_status(report, capsys):
    folder = report.parent.parent
    headline = "12 runs: 4 completed, 7 failed, 1 interrupted"
    index = (report.parent / "index.md").read_text()
    assert headline in index and "## Runs" in index
    assert main(["verdicts", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert headline in printed and headline in (report.parent / "verdicts.md").read_text()
    assert main(["status", str(folder)]) == 0
    status = capsys.readouterr().out
    assert headline in status and "interrupted runs (log, last error line):" in status
    assert main(["verdicts", str(folder), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    killed = next(r for r in runs if r["run_id"] == RUN_DIR)
    assert killed["state"] == "interrupted" and "submit again to resume" in killed["error"]
    logged = next(r for r in runs if r["run_id"] == "logged")
    assert logged["error"] == LOG_BYTES.decode("utf-8", "backslashreplace")


def test_only_the_reports_own_images_are_inlined(tmp_path):
    (tmp_path / "mine.png").write_bytes(b"\x89PNG mine")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.png"
    outside.write_bytes(b"\x89PNG secret")
    (tmp_path / "planted.png").write_bytes(b"\x89PNG planted")
    page = render(f"# t\n\n![a](mine.png) ![b](../{outside.name}) ![c](planted.png) "
                  "![d](http://127.0.0.1:9/x.png) ![e](/etc/hostname)\n\n<img src=x>\n",
                  tmp_path, [tmp_path / "mine.png", outside])
    assert page.count("data:image/png;base64,") == 1 and "PNG mine" not in page
    assert page.count("[image not inlined:") == 4 and "<img src=x>" not in page
    assert "Content-Security-Policy" in page and "script-src 'none'" in page


def test_a_study_name_becomes_a_safe_file_name_and_literal_caption_text():
    """A study's name reaches the report as a figure-file prefix and in a caption."""
    name = "../study\"><img src=x onerror=alert(5)>"
    assert file_name(name) == "___study___img_src_x_onerror_alert_5__"
    assert "<" not in literal(f"Optimisation history of study {name!r}")


def test_literal_is_identity_on_ordinary_values_and_text_on_hostile_ones():
    for ordinary in ("/usr/share/datasets/fashion-mnist", "at_start", "84.2 [83.1, 85.0]",
                     "unresolved (±2.97)", "model.num_latents=8, train.seed=0"):
        assert literal(ordinary) == ordinary
    assert literal("x" * (LIMIT + 5)).endswith("… (5 more characters)")
    assert literal("a\nb\x1b\udcff") == "a\\\\x0ab\\\\x1b\\\\udcff"


def test_hostile_report_in_headless_chromium(report, browser):
    page_url = report.as_uri()
    dialogs, errors, requests = [], [], []
    context = browser.new_context()

    def route(r):
        if r.request.url == page_url or r.request.url.startswith("data:"):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()
    context.route("**/*", route)
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url in (page_url,) or r.url.startswith("data:")
            else requests.append(r.url))
    page.goto(page_url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)
    live = page.evaluate("""() => ({
        scripts: document.scripts.length,
        handlers: [...document.querySelectorAll('*')].filter(
            e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
        frames: document.querySelectorAll('iframe, object, embed, svg').length,
        foreign: [...document.images].filter(i => !i.src.startsWith('data:')).length,
        links: [...document.links].filter(
            a => /^(javascript|https?):/.test(a.href)).length})""")
    text = page.text_content("body")
    assert not dialogs, dialogs
    assert not requests, requests
    assert live == {"scripts": 0, "handlers": 0, "frames": 0, "foreign": 0, "links": 0}, live
    for value in (ROOT_NAME, HOSTILE["knob"] + HOSTILE["markdown"], HOSTILE["error"], RUN_DIR,
                  "12 runs: 4 completed, 7 failed, 1 interrupted",
                  visible(LOG_BYTES.decode("utf-8", "backslashreplace"))):
        assert value in text, value
    assert "red\\x1b[31m text\\u202eevil\\x00" in text
    assert "evil\\x00 <b>xxx" in text and "x" * LIMIT not in text  # cut, saying so:
    assert f"… ({len(visible(CONTROL)) + 1 + len(LONG) - LIMIT} more characters)" in text


def test_a_killed_train_is_interrupted_and_its_rerun_resumes(tmp_path, tiny_fashion_mnist,
                                                              capsys):
    """SIGKILL a real `train` after its first checkpoint: status and figures say
    interrupted; the same command again resumes from the checkpoint and completes."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "experiments", "train", "--out", str(out),
            *(f"{k}={v}" for k, v in {
                **{f"model.{k}": v for k, v in TINY_BASE["model"].items()},
                "data.root": tiny_fashion_mnist, "data.train_subset": 64, "data.val_size": 32,
                "data.image_size": 7, "train.max_steps": 100, "train.eval_every": 2,
                "train.batch_size": 16, "train.epochs": 1000, "train.warmup_steps": 0}.items())]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (
            (out / RESULT).is_file() and read_json(out / RESULT).get("step", 0) >= 4):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = read_json(out / RESULT)
    assert killed_at["status"] == "running" and killed_at["step"] >= 4
    assert main(["status", str(tmp_path)]) == 0
    assert "1 run: 1 interrupted" in capsys.readouterr().out
    assert main(["figures", str(tmp_path)]) == 2  # nothing to draw yet, and it says why
    assert "no completed run to judge or draw" in capsys.readouterr().err
    rerun = subprocess.run(args, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = read_json(out / RESULT)
    assert result["status"] == "completed" and result["step"] == 100
    assert result["sessions"][1]["from_step"] >= 2  # resumed, not restarted
    assert main(["verdicts", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["headline"] == "1 run: 1 completed"
