"""Δ-IRIS's world model (Micheli, Alonso, Fleuret, ICML 2024, arXiv 2406.19320, github.com/vmicheli/delta-iris).

- :mod:`~world_models.delta_iris.tokenizer`: the context-aware tokenizer that encodes frame ``x_{t+1}`` given ``x_t``
  and ``a_t`` into 4 tokens (:class:`Tokenizer`, :class:`TokenizerConfig`, :class:`TokenizerEncoding`), and its
  IRIS-style baseline without context (``TokenizerConfig.iris``);
- :mod:`~world_models.delta_iris.quantizer`: cosine vector quantizer with an EMA codebook and dead-code revival;
- :mod:`~world_models.delta_iris.world_model`: the causal transformer over blocks of [frame embedding, action token,
  4 Δ-tokens] with its token, reward and end heads (:class:`WorldModel`, :class:`WorldModelConfig`);
- :mod:`~world_models.delta_iris.world_model_env`: batched, KV-cached imagination (:class:`DeltaIrisWorldModelEnv`).
"""

from world_models.delta_iris.quantizer import Quantized, Quantizer
from world_models.delta_iris.tokenizer import Tokenizer, TokenizerConfig, TokenizerEncoding, reconstruction_losses
from world_models.delta_iris.world_model import WorldModel, WorldModelConfig, WorldModelOutput
from world_models.delta_iris.world_model_env import DeltaIrisWorldModelEnv

__all__ = [
    "DeltaIrisWorldModelEnv",
    "Quantized",
    "Quantizer",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerEncoding",
    "WorldModel",
    "WorldModelConfig",
    "WorldModelOutput",
    "reconstruction_losses",
]
