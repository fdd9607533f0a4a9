"""A results folder exported to an MLflow tracking server: a view of the run folders, which
stay the source of truth (docs/notebook.md, "MLflow").

One MLflow run per run folder: the config's dotted keys as params, metrics.jsonl's curves
(and result.json's test metrics at the last step) as metrics with their steps, the run id,
status, seed and sweep as tags. The folder's verdicts and HTML report (written by
`perceiver-ablate figures`) are the artifacts of one more run, tagged as the report, since
MLflow has no artifacts per experiment. Each exported run carries a fingerprint of the
records it was made from, so exporting again adds nothing for an unchanged run and
replaces a changed one (MLflow's params cannot be changed and metric histories only grow,
so the old run is deleted and a new one made).

MLflow is an optional extra (`pip install .[mlflow]`): it is imported only here.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from experiments.config import RunConfig
from experiments.orchestration.study import public_url
from experiments.runfolder import RunFolder, run_folders
from experiments.tensorboard import hparams, row_time, run_label, scalars, test_row, timestamp
from perceiver_core.config import ConfigError

TAG = "perceiver."  # the prefix of this exporter's own tags
REPORT_FILES = ("verdicts.md", "verdicts.json", "index.html")
MLFLOW_STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED",
                 "pruned": "KILLED"}
BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics and 100 params per call
PARAMS_BATCH = 100


def import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow is not installed: run `pip install 'perceiver-ablate[mlflow]'`"
                          " (or `pip install mlflow`) and export again") from None
    return mlflow


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """The tracking store must answer once before anything is sent: MLflow's own client
    retries a dead server, and a dead database, for minutes. An HTTP URI must answer its
    /health page; a database URI (other than SQLite) must accept one connection."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
                if reply.status == 200:
                    return
                why = f"HTTP {reply.status}"
        except (urllib.error.URLError, OSError) as exc:
            why = str(getattr(exc, "reason", exc))
        raise ConfigError(f"the MLflow tracking server at {uri} does not answer ({why}): start "
                          "it (`mlflow server --backend-store-uri URI`) or fix --tracking-uri")
    if uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, pool_pre_ping=False)
        try:
            with engine.connect():
                return
        except Exception as exc:  # the driver's own errors: say which and go on no further
            why = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(f"the database at {public_url(uri)} does not answer ({why}): "
                              "start it or fix --tracking-uri") from None
        finally:
            engine.dispose()


def fingerprint(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_records(run_folder: RunFolder) -> dict[str, Any]:
    """What one run folder exports, with its fingerprint (the heartbeat left out: a view
    changes when the run does, not when it breathes)."""
    config = run_folder.read_config()
    cfg = RunConfig.from_dict(config)
    result = run_folder.read_result()
    rows = run_folder.read_metrics()
    kept = {k: result.get(k) for k in ("status", "step", "final", "best", "error")}
    return {"cfg": cfg, "result": result, "rows": rows,
            "fingerprint": fingerprint(config, rows, kept)}


def metric_entities(rows: list[dict], result: dict, start: float | None):
    """(key, value, timestamp in ms, step) of every curve point and test metric."""
    tests, end = test_row(result), timestamp(result.get("updated_at"))
    for row, when in [*((row, row_time(row, start)) for row in rows),
                      *([(tests, end)] if tests else [])]:
        for key, value in scalars(row).items():
            yield key, value, int(1000 * (when or time.time())), int(row["step"])


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Exporter:
    """One export into one MLflow experiment (created if absent), knowing what earlier
    exports put there by the tags they left."""

    def __init__(self, results_dir: Path, tracking_uri: str | None, experiment: str | None):
        mlflow = import_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri or mlflow.get_tracking_uri()
        check_server(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.results_dir = results_dir
        name = experiment or results_dir.resolve().name
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {name!r} is deleted on {public_url(self.uri)}:"
                              " restore it (`mlflow experiments restore`) or choose another "
                              "--experiment")
        self.experiment_id = (found.experiment_id if found else
                              self.client.create_experiment(name))
        self.name = name
        self.existing: dict[str, list] = {}  # our id tag -> [(MLflow run id, fingerprint)]
        for run in self.all_runs():
            key = run.data.tags.get(f"{TAG}run_id")
            if key:
                self.existing.setdefault(key, []).append(
                    (run.info.run_id, run.data.tags.get(f"{TAG}fingerprint")))

    def all_runs(self):
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000,
                                           page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def replace(self, key: str, digest: str) -> bool:
        """False when `key` was exported with this fingerprint already; else True. Either
        way every other copy (stale, or cut short) is deleted."""
        copies = self.existing.get(key, [])
        keep = next((run_id for run_id, found in copies if found == digest), None)
        for run_id, _ in copies:
            if run_id != keep:
                self.client.delete_run(run_id)
        return keep is None

    def export_run(self, run_folder: RunFolder) -> str:
        """'new', 'updated' or 'unchanged'."""
        from mlflow.entities import Metric, Param

        records = run_records(run_folder)
        cfg, result = records["cfg"], records["result"]
        key = str(result.get("run_id") or cfg.run_id)
        known = key in self.existing
        if not self.replace(key, records["fingerprint"]):
            return "unchanged"
        start = timestamp(result.get("started_at"))
        tags = {f"{TAG}run_id": key, f"{TAG}status": str(result.get("status")),
                f"{TAG}seed": str(cfg.train.seed), f"{TAG}sweep": self.results_dir.resolve().name,
                f"{TAG}run_dir": str(run_folder.path.resolve()),
                "mlflow.source.name": "perceiver-ablate"}
        run = self.client.create_run(self.experiment_id, run_name=run_label(run_folder, cfg),
                                     start_time=int(1000 * start) if start else None, tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in hparams(cfg).items()]
        for batch in chunks(params, PARAMS_BATCH):
            self.client.log_batch(run_id, params=batch)
        metrics = [Metric(k, v, t, s) for k, v, t, s in
                   metric_entities(records["rows"], result, start)]
        for batch in chunks(metrics, BATCH):
            self.client.log_batch(run_id, metrics=batch)
        status = MLFLOW_STATUS.get(result.get("status"))
        if status:
            end = timestamp(result.get("updated_at"))
            self.client.set_terminated(run_id, status, end_time=int(1000 * end) if end else None)
        self.done(run_id, records["fingerprint"])
        return "updated" if known else "new"

    def done(self, run_id: str, digest: str) -> None:
        """Mark an MLflow run complete with the fingerprint of what it holds, last: an
        export cut short leaves a run without one, which the next export replaces."""
        self.client.set_tag(run_id, f"{TAG}fingerprint", digest)

    def export_report(self) -> str | None:
        """The verdicts and the HTML report as artifacts of the report run; None when the
        folder has none."""
        folder = self.results_dir / "figures"
        files = [folder / name for name in REPORT_FILES if (folder / name).is_file()]
        if not files:
            return None
        key = "report"
        digest = hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()
        known = key in self.existing
        if not self.replace(key, digest):
            return "unchanged"
        run = self.client.create_run(
            self.experiment_id, run_name="report",
            tags={f"{TAG}run_id": key, f"{TAG}kind": "report",
                  f"{TAG}sweep": self.results_dir.resolve().name})
        for path in files:
            self.client.log_artifact(run.info.run_id, str(path))
        self.client.set_terminated(run.info.run_id, "FINISHED")
        self.done(run.info.run_id, digest)
        return "updated" if known else "new"


def export_mlflow(results_dir: str | Path, tracking_uri: str | None = None,
                  experiment: str | None = None) -> dict[str, int]:
    """Export every run folder below results_dir; returns how many were new, updated and
    unchanged (and the report's fate under `report`)."""
    results_dir = Path(results_dir)
    folders = list(run_folders(results_dir)) if results_dir.is_dir() else []
    if not folders:
        raise ConfigError(f"no run folders under {results_dir} (expected <run-id>/config.yaml;"
                          " see `perceiver-ablate status`)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server: seconds
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # one summary line
    try:
        exporter = Exporter(results_dir, tracking_uri, experiment)
    except ConfigError:
        raise
    except Exception as exc:  # a store MLflow cannot open: its own errors vary by scheme
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"cannot open the MLflow tracking URI {public_url(tracking_uri) or '(default)'} "
            f"({type(exc).__name__}: {why[:200]}): fix --tracking-uri (e.g. "
            "http://HOST:5000 for a server, or postgresql+psycopg2://USER@HOST/DB)") from None
    counts = {"new": 0, "updated": 0, "unchanged": 0, "skipped": 0}  # skipped: no records
    for run_folder in folders:
        if not run_folder.result_file.is_file():
            counts["skipped"] += 1  # not started yet: nothing to show
            continue
        try:
            counts[exporter.export_run(run_folder)] += 1
        except (OSError, ValueError, ConfigError, yaml.YAMLError) as exc:
            print(f"skipping run {run_folder}: {str(exc).splitlines()[0]}", file=sys.stderr)
            counts["skipped"] += 1
    counts["report"] = exporter.export_report()
    counts["experiment"] = exporter.name
    counts["tracking_uri"] = public_url(exporter.uri)  # never a password on screen
    return counts
