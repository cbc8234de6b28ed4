"""How faithful a DIAMOND world model is on real episodes it never trained on (issue 6, items 3 and 5).

- :func:`collect_episodes`: real episodes of an env config played by any SB3-style ``predict`` (the agent's policy, a
  random one), stored in an :class:`~agents.common.episode_buffer.EpisodeBuffer` with each episode's final frame.
- :func:`rollout_windows`: windows of ``n`` context frames + ``horizon`` frames lying inside one episode, spread
  evenly over the data (deterministic).
- :func:`compounding_error`: the world model predicts the ``horizon`` frames autoregressively from the ``n`` real
  context frames and the real actions (each predicted frame becomes context, as in imagination); per step ``k``,
  the MSE against the real frame (pixels in [0, 1], mean over pixels then windows) and the PSNR of that mean,
  beside the "repeat the last real frame" predictor. This is the paper's compounding-error measurement (Sec. 5.1,
  EDM vs DDPM at 1, 3 and 10 denoising steps) as well as the fidelity table of the agent's benchmark.
- :func:`reward_end_accuracy`: the reward/end model on the real transitions of whole episodes, cut into segments of
  the length it trains on and each read from a fresh LSTM state (as imagination starts): accuracy of the argmax
  reward sign, its recall on the non-zero rewards, and accuracy and recall of the termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.common.episode_buffer import EpisodeBuffer
from envs.factory import make_vec_env
from world_models.diamond.batch import WorldModelBatch, batch_from_segment
from world_models.diamond.reward_end import RewEndModel


def _hwc(obs: np.ndarray) -> np.ndarray:
    """Frames ``[..., H, W, 3]`` whether the env gave them channels-last or channels-first."""
    return obs if obs.shape[-1] == 3 else np.moveaxis(obs, -3, -1)


def collect_episodes(env_cfg: dict[str, Any], policy: Any, steps: int, seed: int,
                     deterministic: bool = False) -> EpisodeBuffer:
    """``steps`` env steps of ``policy`` (anything with SB3's ``predict(obs, state, episode_start, deterministic)``)
    in a training env of ``env_cfg`` (Atari: a life loss ends the episode, as in the world model's data); the last,
    unfinished episode is kept as it is."""
    env = make_vec_env(env_cfg, n_envs=1, seed=seed, training=True)
    obs = env.reset()
    frame_shape = _hwc(np.asarray(obs))[0].shape
    buffer = EpisodeBuffer(frame_shape, np.uint8, (), np.int64)
    state, starts = None, np.ones(1, bool)
    for _ in range(steps):
        act, state = policy.predict(obs, state, starts, deterministic)
        new_obs, rew, dones, infos = env.step(act)
        done = bool(dones[0])
        trunc = done and bool(infos[0].get("TimeLimit.truncated", False))
        final = infos[0].get("terminal_observation") if done else None
        buffer.add_step(0, _hwc(np.asarray(obs))[0], int(np.asarray(act).reshape(-1)[0]), float(rew[0]),
                        done and not trunc, trunc, final_obs=None if final is None else _hwc(np.asarray(final)))
        obs, starts = new_obs, dones
    buffer.finish_episode(0)
    env.close()
    return buffer


def rollout_windows(buffer: EpisodeBuffer, n_cond: int, horizon: int, max_windows: int) -> WorldModelBatch:
    """Up to ``max_windows`` windows of ``n_cond + horizon`` frames inside one episode each, evenly spaced over all
    such windows of the buffer."""
    length = n_cond + horizon
    ids = [e for e, n in enumerate(buffer.lengths) for _ in range(max(0, n - length + 1))]
    starts = [s for n in buffer.lengths for s in range(max(0, n - length + 1))]
    if not ids:
        raise ValueError(f"no episode of the {buffer.num_steps} collected steps is {length} steps long "
                         f"(n_cond={n_cond} + horizon={horizon}); collect more steps or shorten the horizon")
    pick = np.unique(np.linspace(0, len(ids) - 1, min(max_windows, len(ids))).round().astype(int))
    return batch_from_segment(buffer.get_segments(np.asarray(ids)[pick], np.asarray(starts)[pick], length))


@dataclass
class CompoundingError:
    """Per-step errors of ``horizon`` autoregressive predictions over ``windows`` windows (pixels in [0, 1])."""

    mse: np.ndarray  # [horizon] the world model's
    mse_repeat_last: np.ndarray  # [horizon] repeating the last real context frame
    windows: int

    @staticmethod
    def psnr(mse: np.ndarray) -> np.ndarray:
        """PSNR in dB of a mean squared error of [0, 1] pixels (100 dB where the error is 0)."""
        return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))

    @property
    def beats_repeat_last(self) -> np.ndarray:
        return self.mse < self.mse_repeat_last


@torch.no_grad()
def compounding_error(sampler: Any, windows: WorldModelBatch, n_cond: int, chunk: int = 32,
                      seed: int = 0) -> CompoundingError:
    """Autoregressive predictions of the frames after each window's ``n_cond`` real frames with the real actions.

    :param sampler: anything with ``sample_next_obs(obs_cond [B, n, 3, H, W], act_cond [B, n]) -> [B, 3, H, W]``
        (:class:`~world_models.diamond.sampler.DiffusionSampler`, :class:`~world_models.diamond.ddpm.DDPMSampler`)
    :param windows: frames ``[W, n_cond + horizon, 3, H, W]`` in [-1, 1] and their actions
    :param seed: torch's global seed before sampling (the samplers draw their noise from it)
    """
    torch.manual_seed(seed)
    n_windows, length = windows.act.shape
    horizon = length - n_cond
    sq_model, sq_repeat = np.zeros(horizon), np.zeros(horizon)
    for i in range(0, n_windows, chunk):
        obs, act = windows.obs[i : i + chunk], windows.act[i : i + chunk]
        obs_cond, act_cond, last = obs[:, :n_cond], act[:, :n_cond], obs[:, n_cond - 1]
        for k in range(horizon):
            predicted = sampler.sample_next_obs(obs_cond, act_cond).clamp(-1, 1)
            real = obs[:, n_cond + k]
            sq_model[k] += (predicted - real).div(2).pow(2).mean(dim=(1, 2, 3)).sum().item()
            sq_repeat[k] += (last - real).div(2).pow(2).mean(dim=(1, 2, 3)).sum().item()
            obs_cond = torch.cat((obs_cond[:, 1:], predicted[:, None]), dim=1)
            act_cond = torch.cat((act_cond[:, 1:], act[:, n_cond + k, None]), dim=1)
    return CompoundingError(sq_model / n_windows, sq_repeat / n_windows, n_windows)


@dataclass
class RewardEndAccuracy:
    transitions: int
    reward_accuracy: float  # argmax reward sign == sign of the real reward
    nonzero_rewards: int
    nonzero_reward_recall: float  # among the transitions with a non-zero reward (nan if none)
    terminations: int
    end_accuracy: float
    end_recall: float  # among the terminal transitions (nan if none)
    # Imagination samples the reward sign and the end from the logits (sample_rew_end), so what it catches is the
    # probability the model gives the true class, not the argmax: a model whose argmax never says "reward" may
    # still put 30% on it where a brick breaks.
    nonzero_reward_prob: float  # mean probability of the true sign at the non-zero rewards (sampled recall)
    false_reward_prob: float  # mean probability of a non-zero sign at the zero rewards (sampled false alarms)
    end_prob: float  # mean probability of the end at the terminal transitions
    false_end_prob: float  # mean probability of the end at the other transitions


@torch.no_grad()
def reward_end_accuracy(model: RewEndModel, buffer: EpisodeBuffer, seq_length: int,
                        device: str | torch.device = "cpu") -> RewardEndAccuracy:
    """The reward/end model over every real transition of ``buffer``, in segments of ``seq_length`` frames
    (``seq_length - 1`` transitions each, consecutive segments sharing one frame) from a fresh LSTM state."""
    step = seq_length - 1
    ids = [e for e, n in enumerate(buffer.lengths) for _ in range(0, n, step)]
    starts = [s for n in buffer.lengths for s in range(0, n, step)]
    seg = buffer.get_segments(ids, starts, seq_length)
    batch = batch_from_segment(seg, device, final_obs=seg.final_obs)
    model.eval()
    logits_rew, logits_end, target_rew, target_end, mask = model.transitions(batch)
    mask = mask & (batch.mask[:, 1:] | target_end)  # an unfinished episode's last step has no next frame
    pred_rew, pred_end = logits_rew[mask].argmax(-1), logits_end[mask].argmax(-1).bool()
    p_rew, p_end = logits_rew[mask].softmax(-1), logits_end[mask].softmax(-1)[:, 1]
    target_rew, target_end = target_rew[mask], target_end[mask]
    nonzero, ends = target_rew != 1, target_end
    p_true_rew = p_rew.gather(1, target_rew[:, None])[:, 0]

    def mean(x: torch.Tensor) -> float:
        return float(x.float().mean()) if x.numel() else float("nan")

    return RewardEndAccuracy(
        transitions=int(mask.sum()), reward_accuracy=mean(pred_rew == target_rew),
        nonzero_rewards=int(nonzero.sum()), nonzero_reward_recall=mean(pred_rew[nonzero] == target_rew[nonzero]),
        terminations=int(ends.sum()), end_accuracy=mean(pred_end == target_end), end_recall=mean(pred_end[ends]),
        nonzero_reward_prob=mean(p_true_rew[nonzero]), false_reward_prob=mean(1 - p_rew[~nonzero, 1]),
        end_prob=mean(p_end[ends]), false_end_prob=mean(p_end[~ends]),
    )
