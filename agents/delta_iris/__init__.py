"""Δ-IRIS (Micheli, Alonso, Fleuret, ICML 2024): tokenizer, world model and actor-critic in imagination."""
