"""StochDQN and StochDDQN (Fourati, Aggarwal, Alouini, ICML 2024, "Stochastic Q-learning for Large Discrete
Action Spaces", https://arxiv.org/abs/2405.10310), with DQN and Double DQN on the same Q-network as baselines.

DQN's two maxima over all N actions become maxima over the candidate set C = R u M of about 2 ceil(log2 N)
actions (:mod:`agents.stochdqn.policy`):

- acting: epsilon-greedy with a = stoch_argmax_{a in C} Q(s, a);
- StochDQN target:  y = r + gamma (1 - done) stochmax_{a' in C'} Q_target(s', a');
- StochDDQN target: y = r + gamma (1 - done) Q_target(s', a*), a* = stoch_argmax_{a' in C'} Q(s', a') (online net).

With a Q-network over an action representation (:class:`~agents.stochdqn.qnet.ActionQNetwork`) a step costs
O(B |C|) network rows instead of O(B N), which is what makes N = 10^4 .. 10^6 affordable.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecEnv

from agents.common.persistence import ZooAlgorithm
from agents.stochdqn.policy import StochQPolicy, next_value
from agents.stochdqn.update import clip_grad_norm, optimizer_step, zero_grad

LOSSES = ("mse", "huber")


def env_action_representation(env: Any, n_actions: int, embedding_dim: int = 32) -> dict[str, Any]:
    """The env's own action representation (``action_representation()`` of a wrapper such as ``Discretize``),
    or a learned embedding for abstract actions."""
    try:
        if isinstance(env, VecEnv):
            # asked first: a missing method raised inside a SubprocVecEnv worker would kill the worker
            if not env.has_attr("action_representation"):
                raise AttributeError("action_representation")
            return dict(env.env_method("action_representation", indices=0)[0])
        return dict(env.get_wrapper_attr("action_representation")())
    except AttributeError:
        return {"type": "embedding", "n": n_actions, "dim": embedding_dim}


class StochDQN(ZooAlgorithm, DQN):
    """Stochastic DQN: SB3's DQN with stochmax targets and stoch_argmax action selection.

    Takes every argument of :class:`stable_baselines3.DQN`, plus:

    :param subset_size: |R|, random actions per call; default ceil(log2 N) (the paper's choice)
    :param memory_size: |M|, memory actions per call; default ceil(log2 N)
    :param ring_size: how many of the M slots hold recent stoch_argmax actions (the rest: replay minibatch
        actions); default ceil(memory_size / 2)
    :param q_network: ``action``: Q(s, a) over an action representation, cost follows |C| (default);
        ``head``: the N-output network, for small N
    :param action_representation: ``auto`` (the env's ``action_representation()``, else a learned embedding) or a
        dict: ``{"type": "grid", "levels": L, "dims": d}``, ``{"type": "bits", "bits": m}``,
        ``{"type": "embedding", "n": N, "dim": k}``
    :param loss: ``mse`` (the official code) or ``huber`` (SB3's DQN)
    """

    agent_id = "stochdqn"
    stochastic: ClassVar[bool] = True
    double: ClassVar[bool] = False
    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": StochQPolicy}  # type: ignore[assignment]

    def __init__(
        self,
        policy: Any,
        env: Any,
        subset_size: int | None = None,
        memory_size: int | None = None,
        ring_size: int | None = None,
        q_network: str = "action",
        action_representation: str | dict[str, Any] = "auto",
        loss: str = "mse",
        **kwargs: Any,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; choose one of: {', '.join(LOSSES)}")
        if action_representation == "auto" and env is not None and q_network == "action":
            action_space = env.action_space
            if not isinstance(action_space, spaces.Discrete):
                raise ValueError(f"{self.agent_id} needs a Discrete action space, got {action_space}; "
                                 "discretize a Box action env with env.discretize=<levels>")
            action_representation = env_action_representation(env, int(action_space.n))
        self.stoch_kwargs = {"subset_size": subset_size, "memory_size": memory_size, "ring_size": ring_size,
                             "q_network": q_network, "action_spec": None if action_representation == "auto"
                             else action_representation}
        self.loss = loss
        super().__init__(policy, env, **kwargs)
        self.hyperparams.update(subset_size=subset_size, memory_size=memory_size, ring_size=ring_size,
                                q_network=q_network, action_representation=action_representation, loss=loss)

    def _setup_model(self) -> None:
        self.policy_kwargs = {**self.policy_kwargs, **self.stoch_kwargs, "stochastic": self.stochastic,
                              "seed": self.seed}
        super()._setup_model()
        self._online_parameters = list(self.q_net.parameters())
        self._target_parameters = list(self.q_net_target.parameters())

    def _on_step(self) -> None:
        """Copy (tau = 1) or Polyak-average the online net into the target every ``target_update_interval`` steps."""
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            with torch.no_grad():
                if self.tau == 1.0:
                    torch._foreach_copy_(self._target_parameters, self._online_parameters)
                else:
                    torch._foreach_lerp_(self._target_parameters, self._online_parameters, self.tau)
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        policy: StochQPolicy = self.policy  # type: ignore[assignment]
        optimizer = policy.optimizer
        losses, next_values, grad_norms = [], [], []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # n-step replay stores gamma**n per transition
            discounts = data.discounts.view(-1) if data.discounts is not None else self.gamma
            # M: the actions of this replay minibatch (the paper's memory for continuous states)
            policy.remember_batch(data.actions.long().view(-1).cpu().numpy())
            with torch.no_grad():
                candidates, mask = (policy.candidates(batch_size, device=data.observations.device) if self.stochastic
                                    else (None, None))
                next_q = next_value(self.q_net, self.q_net_target, data.next_observations, candidates, mask,
                                    self.double, policy.n_actions)
                target = data.rewards.view(-1) + (1 - data.dones.view(-1)) * discounts * next_q
            current = policy.q_values(self.q_net, data.observations, data.actions)
            loss = F.mse_loss(current, target) if self.loss == "mse" else F.smooth_l1_loss(current, target)
            losses.append(loss.item())
            next_values.append(next_q.mean().item())
            # optimizer.zero_grad(), clip_grad_norm_(foreach=True) and optimizer.step(), without their Python layers
            zero_grad(optimizer)
            loss.backward()
            grad_norms.append(clip_grad_norm([p.grad for p in self._online_parameters if p.grad is not None],
                                             self.max_grad_norm))
            optimizer_step(optimizer)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if losses:
            self.logger.record("train/loss", fmean(losses))
            self.logger.record("train/next_q", fmean(next_values))
        if grad_norms:  # the norm before clipping, one host sync per train() call
            grad_norm = grad_norms[0] if len(grad_norms) == 1 else torch.stack(grad_norms).mean()
            self.logger.record("train/grad_norm", float(grad_norm))

    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state["stoch_memory"] = self.policy.memory_state()  # type: ignore[operator]
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        self.policy.set_memory_state(state["stoch_memory"])  # type: ignore[operator]


class StochDDQN(StochDQN):
    """Stochastic Double DQN: the target's stoch_argmax is taken under the online net, evaluated by the target."""

    agent_id = "stochddqn"
    double = True


class FullDQN(StochDQN):
    """DQN with the full max over all N actions on the same Q-network as StochDQN (the paper's DQN baseline)."""

    agent_id = "fulldqn"
    stochastic = False


class FullDDQN(StochDQN):
    """Double DQN with full maxima on the same Q-network (the paper's DDQN baseline)."""

    agent_id = "fullddqn"
    stochastic = False
    double = True
