"""The model factory: a RunConfig (experiments/config.py) -> its model, its initial weights
and its FLOP count, for every caller that needs cfg's model (training, the benchmark, the
`flops` command, `sweep --dry-run`, readback).

Named factory rather than model or models: perceiver_core/model.py is the network itself
and knows nothing of run configs; this module only reads a config and asks the core to
build what it says.
"""

from __future__ import annotations

import torch

from experiments.config import RunConfig
from experiments.data import input_spec
from experiments.data.registry import check_config
from experiments.seeding import couple_init
from perceiver_core import build_model, count_flops


def build_for(cfg: RunConfig, spec) -> torch.nn.Module:
    """cfg's model for inputs of `spec` (an InputSpec, possibly of several modalities)."""
    return build_model(cfg.model, cfg.encoding, spec.channels, spec.index_shape,
                       spec.modalities)


def initial_model(cfg: RunConfig, spec) -> torch.nn.Module:
    """cfg's model at its initial weights, drawn at train's init seed: from the global stream,
    or module by module from generators of their own with train.coupled_init
    (experiments/seeding.py)."""
    torch.manual_seed(cfg.train.weights_seed)
    model = build_for(cfg, spec)
    if cfg.train.coupled_init:
        couple_init(model, cfg.train.weights_seed)
    return model


def config_flops(cfg: RunConfig) -> dict:
    """count_flops (params, MACs, paper FLOPs, breakdown) of one example of cfg's data.

    A Perceiver is built on the meta device (shapes only, so even the paper's ImageNet
    model is counted without allocating its weights or activations); the CNN/ViT baselines
    run one example on the CPU, as torch.jit tracing of convolutions fails on meta tensors.
    """
    check_config(cfg)
    spec = input_spec(cfg.data)
    with torch.device("meta" if cfg.model.arch == "perceiver" else "cpu"):
        model = build_for(cfg, spec)
        positions = spec.example_positions()
        inputs = torch.zeros(1, spec.num_inputs, spec.channels)
    return count_flops(model, inputs, positions)
