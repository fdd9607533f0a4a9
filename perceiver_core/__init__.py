"""A compact, paper-faithful PyTorch Perceiver with FLOP/param accounting.

    model = build_model(model_cfg, encoding_cfg, input_channels, index_shape)
    logits = model(inputs, positions)            # (B, M, C), (M, d) or (B, M, d)
    counts = count_flops(model, inputs, positions)
"""

from perceiver_core.accounting import count_flops
from perceiver_core.config import ConfigError, EncodingConfig, ModelConfig
from perceiver_core.model import build_model
from perceiver_core.position import fourier_features, grid_positions

__all__ = ["ModelConfig", "EncodingConfig", "ConfigError", "build_model", "grid_positions",
           "fourier_features", "count_flops"]
