"""Coupled initialisation: common random numbers across configs (docs/verdicts.md,
"Paired seeds").

A module's parameters are normally drawn one after another from the global torch stream,
so a config that changes one module (N = 4 latents instead of 32) shifts the draws of
every module built after it: two configs at the same seed share their batch order but
not one initial weight. With `train.coupled_init`, every module that owns parameters is
drawn again by its own `reset_parameters()` from a generator seeded by (init seed, the
module's name, its parameters' names and shapes), so two configs that share a module by
name and shape start it identical, whatever else they change. The distributions are the
modules' own; only the stream each draws from changes.

The global RNG streams themselves (`rng_state`) are read and set here too: a checkpoint
keeps them, and each seed of a pack trains in streams of its own (experiments/engine.py).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from perceiver_core.config import ConfigError


def derived_seed(seed: int, *key) -> int:
    """A 63-bit seed that is a pure function of (seed, key), independent across keys."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def owned(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters `module.reset_parameters()` draws: its own, and those of its parameter
    containers (a ParameterList has no reset of its own; its owner draws it)."""
    params = list(module.named_parameters(recurse=False))
    for child_name, child in module.named_children():
        if isinstance(child, (nn.ParameterList, nn.ParameterDict)):
            params += [(f"{child_name}.{n}", p) for n, p in child.named_parameters()]
    return params


def couple_init(model: nn.Module, seed: int) -> None:
    """Re-draw every parameter of `model` module by module from generators of (seed, module
    name, parameter shapes). The global RNG stream is left as it was."""
    drawn: set[int] = set()
    for name, module in model.named_modules():  # a shared module once, by its first name
        if isinstance(module, (nn.ParameterList, nn.ParameterDict)):
            continue
        params = owned(module)
        if not params:
            continue
        reset = getattr(module, "reset_parameters", None)
        if reset is None:
            where = name or "the model"
            raise ConfigError(f"train.coupled_init: {type(module).__name__} ({where}) has "
                              "parameters but no reset_parameters(); set "
                              "train.coupled_init=false for this model")
        key = tuple((n, tuple(p.shape)) for n, p in params)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(derived_seed(seed, name, key))
            reset()
        drawn.update(id(p) for _, p in params)
    missed = [n for n, p in model.named_parameters() if id(p) not in drawn]
    if missed:  # a parameter container outside any module's reset
        raise ConfigError(f"train.coupled_init cannot draw {', '.join(missed)}; set "
                          "train.coupled_init=false for this model")


def rng_state() -> dict:
    """The global RNG streams a run draws from (a checkpoint keeps them)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
