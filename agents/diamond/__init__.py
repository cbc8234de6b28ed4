"""DIAMOND (Alonso et al., NeurIPS 2024): :class:`~agents.diamond.agent.Diamond`, registered as ``diamond``."""
