"""StochDQN: DQN with stochastic maximization over a sub-linear candidate set (Fourati et al., ICML 2024)."""
