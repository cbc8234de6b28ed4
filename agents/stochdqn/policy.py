"""The Stochastic Q-learning policy: stoch_argmax for acting, stochmax for targets (Fourati et al. 2024, Alg. 1).

Both operate over the candidate set C = R u M (Sec. 4):

- R: ``subset_size`` = ceil(log2 N) actions drawn uniformly without replacement, fresh at each call and for each
  state (numba, :mod:`agents.stochdqn.sampling`, seeded from the agent's RNG);
- M: ``memory_size`` = ceil(log2 N) actions from memory: the distinct actions of the last replay minibatch (the
  paper's memory for continuous states, as in the official code) plus a ring of the ``ring_size`` most recent
  stoch_argmax actions.

So |C| <= subset_size + memory_size = 2 ceil(log2 N). ``stochastic=False`` gives the full max over all N actions
with the same network (the DQN/DDQN baselines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule

from agents.stochdqn.qnet import ActionQNetwork, HeadQNetwork
from agents.stochdqn.sampling import SubsetSampler, first_distinct
from agents.stochdqn.sampling import subset_size as ceil_log2

Q_NETWORKS = ("action", "head")


class StochQPolicy(BasePolicy):
    """Q-network + target network + the candidate sets of Stochastic Q-learning.

    :param observation_space: a flat Box observation space
    :param action_space: Discrete(N)
    :param lr_schedule: learning-rate schedule (SB3)
    :param action_spec: the action representation for ``q_network="action"`` (see :mod:`agents.stochdqn.qnet`)
    :param q_network: ``action`` (Q(s, a) over an action representation: cost follows |C|) or ``head`` (N outputs)
    :param net_arch: hidden layer sizes
    :param stochastic: stochmax / stoch_argmax over C (True) or max / argmax over all N actions (False)
    :param subset_size: |R|, default ceil(log2 N)
    :param memory_size: |M|, default ceil(log2 N); the minibatch part is ``memory_size - ring_size``
    :param ring_size: how many recent stoch_argmax actions M keeps, default ceil(memory_size / 2)
    :param seed: seed of the candidate sampler
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        action_spec: dict[str, Any] | None = None,
        q_network: str = "action",
        net_arch: list[int] | None = None,
        stochastic: bool = True,
        subset_size: int | None = None,
        memory_size: int | None = None,
        ring_size: int | None = None,
        seed: int | None = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if optimizer_kwargs is None and optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
            optimizer_kwargs = {"fused": True}  # one kernel for all parameters: the net is small, the loop is hot
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs, normalize_images=False)
        if q_network not in Q_NETWORKS:
            raise ValueError(f"q_network={q_network!r}; choose one of: {', '.join(Q_NETWORKS)}")
        self.n_actions = int(action_space.n)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.stochastic = stochastic
        self.q_network_kind, self.net_arch, self.action_spec = q_network, net_arch, action_spec
        default = ceil_log2(self.n_actions)
        self.subset_size = min(subset_size or default, self.n_actions)
        self.memory_size = memory_size or default
        self.ring_size = ring_size if ring_size is not None else -(-self.memory_size // 2)
        self.sampler = SubsetSampler(self.n_actions, self.subset_size, np.random.default_rng(seed))
        # deterministic predictions (evaluation) draw from their own stream and leave the memory as it is, so that
        # evaluating during training does not change the training run
        self.eval_sampler = SubsetSampler(self.n_actions, self.subset_size, np.random.default_rng(seed).spawn(1)[0])
        self.ring = np.full(self.ring_size, -1, dtype=np.int64)
        self.ring_pos = 0
        self.batch_memory = np.empty(0, dtype=np.int64)
        self.q_net = self.make_q_net()
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.train(False)
        self.optimizer = self.optimizer_class(self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def make_q_net(self) -> torch.nn.Module:
        if self.q_network_kind == "head":
            return HeadQNetwork(self.obs_dim, self.n_actions, self.net_arch)
        if self.action_spec is None:
            raise ValueError("q_network='action' needs an action representation (action_spec)")
        return ActionQNetwork(self.obs_dim, self.action_spec, self.net_arch)

    # ------------------------------------------------------------------ memory M
    def memory(self) -> np.ndarray:
        """M: the minibatch actions and the ring of recent stoch_argmax actions (-1 marks an empty ring slot)."""
        return np.concatenate([self.batch_memory, self.ring])

    def remember_batch(self, actions: np.ndarray) -> None:
        """Keep the first ``memory_size - ring_size`` distinct actions of a replay minibatch."""
        self.batch_memory = first_distinct(actions, max(self.memory_size - self.ring_size, 0))

    def remember_argmax(self, actions: np.ndarray) -> None:
        for action in np.asarray(actions).reshape(-1):
            if self.ring_size:
                self.ring[self.ring_pos] = action
                self.ring_pos = (self.ring_pos + 1) % self.ring_size

    # ------------------------------------------------------------------ stochmax / stoch_argmax
    def candidates(
        self, batch: int, sampler: SubsetSampler | None = None, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """C = R u M for each of ``batch`` states: (actions int64 [B, W], mask bool [B, W]) on ``device`` (default:
        the policy's; the hot paths pass their observations' device, which SB3's property would find by walking
        the module tree)."""
        cands, mask = (sampler or self.sampler).candidates(batch, self.memory())
        device = self.device if device is None else device
        return torch.from_numpy(cands).to(device), torch.from_numpy(mask).to(device)

    def best(
        self, net: torch.nn.Module, obs: torch.Tensor, sampler: SubsetSampler | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(stochmax, stoch_argmax) of Q over fresh candidates C (stochastic), else (max, argmax) over all N.

        The full max evaluates Q for all N actions of every state: the cost Stochastic Q-learning avoids."""
        obs = obs.float().reshape(obs.shape[0], -1)
        if not self.stochastic:
            return net.q_all(obs, self.n_actions).max(dim=1)
        return best_over(net, obs, *self.candidates(obs.shape[0], sampler, obs.device))

    def q_values(self, net: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return net.q_at(obs.float().reshape(obs.shape[0], -1), actions.long().reshape(-1))

    def _predict(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """stoch_argmax_a Q(s, a): in training (the greedy part of epsilon-greedy) it is remembered in the ring;
        deterministic calls (evaluation) use their own sampler and change no training state."""
        _, actions = self.best(self.q_net, observation, self.eval_sampler if deterministic else None)
        if self.stochastic and not deterministic:
            self.remember_argmax(actions.cpu().numpy())
        return actions

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self._predict(obs, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        # the Q-networks have no dropout or batch norm: only the flag changes (SB3 switches modes at every step), set
        # in the instance dict as nn.Module.__init__ does (nn.Module.__setattr__ costs more than the rest of the call)
        self.__dict__["training"] = mode

    # ------------------------------------------------------------------ JSON state for checkpoints
    def memory_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.get_state(), "eval_sampler": self.eval_sampler.get_state(),
                "ring": self.ring.tolist(), "ring_pos": self.ring_pos, "batch_memory": self.batch_memory.tolist()}

    def set_memory_state(self, state: dict[str, Any]) -> None:
        self.sampler.set_state(state["sampler"])
        if "eval_sampler" in state:  # checkpoints written before evaluation had its own stream lack it
            self.eval_sampler.set_state(state["eval_sampler"])
        self.ring = np.asarray(state["ring"], dtype=np.int64)
        self.ring_pos = int(state["ring_pos"])
        self.batch_memory = np.asarray(state["batch_memory"], dtype=np.int64)


def best_over(
    net: torch.nn.Module, obs: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """stochmax_{a in C} Q(s, a) and stoch_argmax for each state, over given candidates (padding masked out)."""
    values, index = _masked_q(net, obs, candidates, mask).max(dim=1)
    return values, candidates.gather(1, index[:, None]).squeeze(1)


def stochmax_over(
    net: torch.nn.Module, obs: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """stochmax_{a in C} Q(s, a) alone: the values of :func:`best_over`, without looking up the argmax."""
    return _masked_q(net, obs, candidates, mask).amax(dim=1)


def _masked_q(net: torch.nn.Module, obs: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Q(s, a) of each state's candidates, -inf on the padding: [B, W]."""
    return torch.where(mask, net(obs.float().reshape(obs.shape[0], -1), candidates), -torch.inf)


def next_value(
    online: torch.nn.Module,
    target: torch.nn.Module,
    next_obs: torch.Tensor,
    candidates: torch.Tensor | None,
    mask: torch.Tensor | None,
    double: bool,
    n_actions: int = 0,
) -> torch.Tensor:
    """The bootstrap value of the TD target, over candidates C' of each next state (``None``: all N actions).

    StochDQN:  stochmax_{a' in C'} Q_target(s', a')            (DQN: max over all actions).
    StochDDQN: Q_target(s', a*), a* = stoch_argmax_{a' in C'} Q_online(s', a')   (Double DQN, van Hasselt 2016).
    """
    flat = next_obs.float().reshape(next_obs.shape[0], -1)
    if candidates is None or mask is None:
        if double:
            return target.q_at(flat, online.q_all(flat, n_actions).argmax(dim=1))
        return target.q_all(flat, n_actions).max(dim=1).values
    if double:
        return target.q_at(flat, best_over(online, flat, candidates, mask)[1])
    return stochmax_over(target, flat, candidates, mask)
