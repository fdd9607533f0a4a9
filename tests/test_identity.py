"""Run identity: the signature, its non-semantic keys, and folders of the earlier ids."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments.cli import main
from experiments.config import NON_SEMANTIC, RunConfig, TrainConfig, load_config, short_hash
from experiments.errors import CheckpointError
from experiments.orchestration.sweeps import load_sweep
from experiments.records import read_json, read_jsonl, read_yaml
from experiments.runfolder import CHECKPOINT, CONFIG, METRICS, RESULT, RunFolder, migrate
from experiments.train import train_run

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_SWEEP = FIXTURES / "legacy-sweep.yaml"  # what wrote fixtures/legacy-sweep/
LEGACY_IDS = ("ce6f8724c281", "e2df514f33fd")  # sha1 of every key, the earlier scheme
TINY = {"model.num_latents": 4, "model.latent_channels": 8, "model.num_blocks": 1,
        "model.self_attends_per_block": 1, "model.num_cross_attends": 1,
        "model.latent_heads": 1, "encoding.num_bands": 2, "data.train_subset": 64,
        "data.val_size": 32, "data.image_size": 7, "train.max_steps": 4,
        "train.eval_every": 2, "train.batch_size": 16, "train.epochs": 100,
        "train.warmup_steps": 0}
TIMING = ("time_s", "samples_per_s")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A two-class ImageFolder tree: the data set that data.num_workers decodes."""
    root = tmp_path_factory.mktemp("folder")
    for part, count in (("train", 12), ("val", 4)):
        for c, name in enumerate(("dark", "light")):
            (root / part / name).mkdir(parents=True)
            for k in range(count):
                level = 40 + 150 * c + 5 * k
                Image.new("RGB", (12, 10), (level, 255 - level, k * 9)).save(
                    root / part / name / f"{k}.png")
    return root


def metrics(run_dir: Path) -> tuple[list[dict], dict]:
    rows = [{k: v for k, v in row.items() if k not in TIMING}
            for row in read_jsonl(run_dir / METRICS)]
    return rows, read_json(run_dir / RESULT)["final"]


def non_semantic_pair(key: str, tiny_root: Path, image_folder: Path, tmp_path: Path):
    """Two configs that differ only in `key`, on a data set where the key is used."""
    if key == "data.num_workers":
        base = {**TINY, "data.name": "imagenet", "data.root": str(image_folder),
                "data.val_size": 4, "data.image_size": 8, "data.train_subset": None,
                "model.num_classes": 2, "train.batch_size": 8}
        return base, {**base, key: 2}
    base = {**TINY, "data.root": str(tiny_root)}
    if key == "data.root":
        moved = tmp_path / "moved-data"
        shutil.copytree(tiny_root, moved)
        return base, {**base, key: str(moved)}
    if key == "train.checkpoint_every":
        return base, {**base, key: 1}
    raise AssertionError(f"{key} is declared non-semantic but has no test here: add one")


@pytest.mark.parametrize("key", NON_SEMANTIC)
def test_a_non_semantic_key_changes_neither_the_id_nor_the_metrics(
        key, tiny_fashion_mnist, image_folder, tmp_path):
    first, second = (load_config(None, overrides) for overrides in
                     non_semantic_pair(key, tiny_fashion_mnist, image_folder, tmp_path))
    assert first.flat()[key] != second.flat()[key] and first.run_id == second.run_id
    for name, cfg in (("a", first), ("b", second)):
        assert train_run(cfg, tmp_path / name)["status"] == "completed"
    (rows_a, final_a), (rows_b, final_b) = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["step"] for r in rows_a] == [2, 4] and rows_a == rows_b and final_a == final_b
    assert "test_acc" in final_a


def test_semantic_keys_and_defaults_in_the_id():
    default = RunConfig()
    assert default.signature() == {} and len(default.run_id) == 12
    cfg = load_config(None, ["model.num_latents=32"])
    assert load_config(None, {"model.num_latents": 32}).run_id == cfg.run_id
    assert load_config(None, ["model.num_latents=33"]).run_id != cfg.run_id
    # A value spelled as the vocabulary's default is left out: the preset's lr vs 1e-3.
    assert "train.lr" in cfg.signature()
    assert "train.lr" not in load_config(None, ["train.lr=0.001"]).signature()
    assert load_config(None, ["train.lr=0.001"]).run_id == \
        load_config(None, ["train.lr=1e-3"]).run_id


def test_a_key_added_later_with_a_default_leaves_every_id_unchanged():
    """A throwaway field added to TrainConfig, as a later version would add one."""
    Train = dataclasses.make_dataclass(
        "TrainConfig", [("new_knob", float, 0.5)], bases=(TrainConfig,), frozen=True)
    Later = dataclasses.make_dataclass(
        "RunConfig", [("train", Train, dataclasses.field(default_factory=Train))],
        bases=(RunConfig,), frozen=True)

    def later(cfg: RunConfig, **train) -> RunConfig:
        return Later(cfg.model, cfg.encoding, cfg.data, Train(**{
            **dataclasses.asdict(cfg.train), **train}))

    configs = [load_config(), load_config(preset="paper-imagenet"),
               load_config(Path(__file__).parents[1] / "experiments/configs/"
                           "fashion-mnist-long.yaml"),
               *(p.config for p in load_sweep("fig6-bands").points)]
    for cfg in configs:
        assert later(cfg).run_id == cfg.run_id
        assert later(cfg, new_knob=0.7).run_id != cfg.run_id
        # The earlier scheme (a hash of every key) renamed every run: the reason for the
        # signature.
        assert short_hash(later(cfg).to_dict()) != short_hash(cfg.to_dict())


def copy_legacy(folder: Path) -> dict[str, Path]:
    shutil.copytree(FIXTURES / "legacy-sweep", folder)
    return {run_id: folder / run_id for run_id in LEGACY_IDS}


def test_a_sweep_folder_of_the_earlier_ids_is_recognised_and_nothing_is_retrained(
        tmp_path, capsys):
    out = tmp_path / "legacy"
    old = copy_legacy(out)
    records = {run_id: {name: (path / name).read_bytes() for name in (RESULT, CHECKPOINT)}
               for run_id, path in old.items()}
    sweep = load_sweep(LEGACY_SWEEP)
    # The fixture was written before later versions added keys (the modalities' data.*):
    # its folders are recognised from their config.yaml, not from a recomputed old hash.
    current = {legacy: RunConfig.from_dict(read_yaml(path / CONFIG)).run_id
               for legacy, path in old.items()}
    assert set(current.values()) == {p.run_id for p in sweep.points}
    assert not set(current.values()) & set(LEGACY_IDS)

    # The same sweep, with the debug executor that would train right here: nothing to do.
    assert main(["sweep", str(LEGACY_SWEEP), "--executor", "debug", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 run(s) completed, not resubmitted" in printed and "nothing to submit" in printed
    for legacy, run_id in current.items():
        assert (out / legacy).is_symlink() and (out / legacy).resolve() == out / run_id
        for name, content in records[legacy].items():  # kept byte for byte, not retrained
            assert (out / run_id / name).read_bytes() == content

    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "2 runs: 2 completed" in status
    assert all(run_id in status for run_id in current.values())

    from analysis.results import load_results

    runs = load_results(out)  # each run once: the old names are links, not folders
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}


def test_a_train_folder_of_the_earlier_id_is_returned_not_retrained(tmp_path, monkeypatch,
                                                                     capsys):
    """`perceiver-ablate train` looks in results/train/<run id>; an earlier version put
    the same run under its old id."""
    monkeypatch.chdir(tmp_path)
    legacy = copy_legacy(tmp_path / "results" / "train")[LEGACY_IDS[0]]
    cfg = RunConfig.from_dict(read_yaml(legacy / CONFIG))
    result = (legacy / RESULT).read_text()
    overrides = [f"{key}={value}" for key, value in cfg.flat().items()
                 if value is not None]
    assert main(["train", *overrides]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(Path("results") / "train" / cfg.run_id)
    assert "completed at step 2" in err and "eval step" not in err  # nothing trained
    assert (tmp_path / out.strip() / RESULT).read_text() == result


def test_a_checkpoint_of_another_run_is_refused_and_nothing_is_overwritten(
        tiny_fashion_mnist, tmp_path, capsys):
    """The soak's open finding (docs/run-identity.md, "Soak under faults"): a resumed run
    whose numbers looked like another lr's. An interrupted run whose folder holds another
    lr's checkpoint refuses to resume from it, naming both runs, and writes nothing."""
    overrides = {lr: {**TINY, "data.root": str(tiny_fashion_mnist), "train.lr": lr}
                 for lr in (0.0023, 0.0047)}
    mine, other = (load_config(None, o) for o in overrides.values())
    for cfg in (mine, other):
        assert train_run(cfg, tmp_path / cfg.run_id)["status"] == "completed"
    folder = RunFolder.of(tmp_path, mine)
    folder.write_result({**folder.read_result(), "status": "running"})  # its trainer gone
    shutil.copyfile(RunFolder.of(tmp_path, other).checkpoint_file, folder.checkpoint_file)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(folder.path)): p.read_bytes()
                for p in folder.path.rglob("*") if p.is_file()}

    before = files()
    assert {CONFIG, METRICS, RESULT, CHECKPOINT} <= set(before)
    with pytest.raises(CheckpointError) as refused:
        train_run(mine, folder)
    assert f"written by run {other.run_id}, not by this run ({mine.run_id})" in str(refused.value)
    items = [f"{key}={value}" for key, value in overrides[0.0023].items()]
    capsys.readouterr()  # the two trainings' progress
    assert main(["train", *items, "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perceiver-ablate train: error: ") and len(err.splitlines()) == 1
    assert str(folder.checkpoint_file) in err and other.run_id in err and mine.run_id in err
    assert files() == before  # nothing written: not config, metrics, result, events


def test_a_checkpoint_written_before_run_ids_were_signatures_resumes(tiny_fashion_mnist,
                                                                      tmp_path, capsys):
    """An earlier version's checkpoint holds no run id of this version, only its config:
    read under this version's ids it is the run's own, so the run resumes from it."""
    out = tmp_path / "legacy"
    copy_legacy(out)
    migrate(out)
    cfg = RunConfig.from_dict(read_yaml(out / LEGACY_IDS[0] / CONFIG)).replace(
        {"data.root": str(tiny_fashion_mnist)})  # non-semantic: the same run
    folder = RunFolder.of(out, cfg)
    assert (out / LEGACY_IDS[0]).resolve() == folder.path  # renamed, the old name a link
    state = torch.load(folder.checkpoint_file, map_location="cpu", weights_only=True)
    assert "run_id" not in state and folder.id not in LEGACY_IDS and state["step"] == 2
    kept = folder.read_result()
    folder.write_result({**kept, "status": "running"})  # interrupted at its last checkpoint
    result = train_run(cfg, folder)
    err = capsys.readouterr().err
    assert f"resumed {folder} at step 2/2" in err and "eval step" not in err
    assert result["status"] == "completed" and result["step"] == 2
    assert {k: result["final"][k] for k in ("val_acc", "val_loss", "train_loss")} == \
        {k: kept["final"][k] for k in ("val_acc", "val_loss", "train_loss")}
