"""The config vocabulary: layering, overrides, validation and run ids."""

from dataclasses import fields
from pathlib import Path

import pytest

from experiments.config import (
    SECTIONS,
    ConfigError,
    RunConfig,
    load_config,
    parse_overrides,
    presets,
    valid_keys,
)
from experiments.records import write_yaml
from experiments.runfolder import migrate

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_the_fashion_mnist_preset_and_paper_preset_is_the_paper_model():
    small = load_config()
    assert small.data.name == "fashion_mnist" and small.model.num_classes == 10
    paper = load_config(preset="paper-imagenet")
    m = paper.model
    assert (m.num_latents, m.latent_channels, m.num_blocks, m.self_attends_per_block,
            m.num_cross_attends, m.cross_heads, m.latent_heads, m.widening_factor) == \
        (512, 1024, 8, 6, 8, 1, 8, 1)
    assert m.init_scale == 0.02 and m.cross_attend_placement == "interleaved"
    assert (paper.encoding.num_bands, paper.encoding.max_resolution) == (64, 224.0)
    assert {"fashion-mnist", "paper-imagenet"} <= set(presets())


def test_the_documented_long_config_is_the_measured_one(tmp_path):
    """README's 90.07% was measured in run folder 9fda79d23ff4, the id of the version
    before signatures; its id is now 5f980e8fee2f. An edit of the config (or of the
    defaults it inherits) that changes the run makes that number stale."""
    long = load_config(ROOT / "experiments/configs/fashion-mnist-long.yaml")
    m, d, t = long.model, long.data, long.train
    assert (m.num_latents, m.self_attends_per_block, m.cross_heads, m.cross_qk_channels) == \
        (64, 3, 8, 64)
    assert (d.augment, d.crop_scale_min, d.hflip, t.epochs, t.lr) == ("crop", 0.8, True, 50, 0.003)
    assert long.run_id == "5f980e8fee2f"
    # The measured folder, as that version wrote it, is recognised as this run and renamed.
    old = tmp_path / "9fda79d23ff4"
    old.mkdir()
    write_yaml(old / "config.yaml", long.to_dict())
    assert migrate(tmp_path) == {"9fda79d23ff4": "5f980e8fee2f"}
    assert (tmp_path / "5f980e8fee2f" / "config.yaml").is_file() and old.is_symlink()


def test_overrides_are_typed_and_layered(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: paper-imagenet\nmodel:\n  num_latents: 128\n")
    cfg = load_config(path, ["model.num_latents=64", "train.lr=1e-3", "encoding.spacing=log",
                             "data.train_subset=256", "model.share_cross_attends=false"])
    assert cfg.model.num_latents == 64 and cfg.model.latent_channels == 1024
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.encoding.spacing == "log" and cfg.data.train_subset == 256
    assert cfg.model.share_cross_attends is False


@pytest.mark.parametrize("override, message", [
    ("model.num_latens=3", "did you mean model.num_latents"),
    ("modle.num_latents=3", "unknown config key"),
    ("model.num_latents=0", "model.num_latents=0 must be >= 1"),
    ("model.num_latents=abc", "must be of type int"),
    ("model.cross_attend_placement=middle", "not one of interleaved, at_start"),
    ("model.num_cross_attends=9", "num_cross_attends=9 > model.num_blocks"),
    ("model.init_scale=0", "must be > 0"),
    ("encoding.num_bands=0", "encoding.num_bands=0 must be >= 1"),
    ("encoding.max_resolution=-1", "must be > 0"),
    ("encoding.kind=sinusoid", "not one of fourier, learned, none"),
    ("train.optimizer=sgd", "not one of lamb, adamw"),
    ("model.latent_heads=3", "divisible"),
    ("notakeyvalue", "not of the form key=value"),
    ("train.lr=nan", "train.lr=nan must be a finite number"),
    ("train.lr=inf", "train.lr=inf must be a finite number"),
    ("train.lr=.nan", "train.lr=nan must be a finite number"),
    ("train.lr=-.inf", "train.lr=-inf must be a finite number"),
])
def test_invalid_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_run_id_is_a_stable_hash_of_the_resolved_config():
    a = load_config(None, ["model.num_latents=32"])
    b = load_config(None, {"model.num_latents": 32})
    c = load_config(None, ["model.num_latents=33"])
    assert a.run_id == b.run_id != c.run_id and len(a.run_id) == 12
    assert RunConfig.from_dict(a.to_dict()) == a
    assert a.replace({"model.num_latents": 33}) == c


def test_every_flat_key_is_a_valid_override():
    cfg = load_config()
    assert sorted(cfg.flat()) == sorted(valid_keys())
    assert parse_overrides(["a.b=[1, 2]"]) == {"a.b": [1, 2]}


def test_missing_or_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config(None, preset="nope")


FLOAT_KEYS = [f"{name}.{f.name}" for name, section in SECTIONS.items()
              for f in fields(section) if "float" in str(f.type)]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_are_rejected_for_every_float_key(key, value):
    """NaN passes every `<`/`>` bound, so it needs its own check; YAML's `nan` is a string
    that float() turns into NaN, `.nan` a float already: both are refused."""
    assert {"model.init_scale", "encoding.max_resolution", "train.lr"} <= set(FLOAT_KEYS)
    for raw in (value, {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[value]):
        with pytest.raises(ConfigError, match=rf"{key}=\S+ must be a finite number"):
            load_config(None, [f"{key}={raw}"])


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_value_writes_nothing(tmp_path, capsys, value):
    from experiments.cli import main

    out = tmp_path / "run"
    assert main(["train", f"train.lr={value}", "--out", str(out)]) == 2
    assert f"train.lr={value} must be a finite number" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "flops", "bench"])
@pytest.mark.parametrize("override, message", [
    ("data.name=mnist", "data.name='mnist' is not one of fashion_mnist, cifar10, imagenet, "
                        "fashion_mnist_points, modelnet40, japanese_vowels, audioset"),
    ("data.augment=bogus", "data.augment='bogus' is not one of none, crop, randaugment, scale"),
    ("data.hflip=true data.name=japanese_vowels",
     "data.hflip mirrors images; data.name=japanese_vowels is not one"),
])
def test_the_data_sets_check_a_command_line_config_before_anything_is_written(
        tmp_path, capsys, command, override, message):
    """The config vocabulary leaves data.name and data.augment to the data sets
    (experiments/data/registry.py, check_config); every command that takes a config runs
    that check first."""
    from experiments.cli import main

    load_config(None, override.split())  # the vocabulary alone accepts it
    out = tmp_path / "run"
    args = [command, *override.split()] + (["--out", str(out)] if command == "train" else [])
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"perceiver-ablate {command}: error: {message}"
    assert not out.exists()
