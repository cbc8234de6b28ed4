"""DIAMOND's reward/termination model R_psi: a CNN over two consecutive frames, conditioned on the action, then an LSTM.

As ``src/models/rew_end_model.py`` of github.com/eloialonso/diamond (Alonso et al. 2024, Sec. 3 and App. D), written
anew:

- **Encoder**: ``concat(x_t, x_{t+1})`` (6 channels) -> conv3x3 -> ``len(channels)`` stages of residual blocks with
  :class:`~world_models.diamond.blocks.AdaGroupNorm` conditioned on ``Embedding(a_t)`` (``cond_channels`` = 128),
  stride-2 convs between stages (64 -> 8 pixels), then one more stage of two blocks with self-attention;
  flattened: ``32 * 8 * 8 = 2048`` features.
- **Memory**: ``LSTM(2048, 512)`` over the transitions of a segment (input weights xavier, recurrent weights
  orthogonal, forget-gate bias 1, other biases 0: the official ``init_lstm``).
- **Heads**: ``Linear(512, 512) -> SiLU -> Linear(512, 3 + 2, no bias)``: 3 logits of the reward sign
  ``{-1, 0, +1}`` and 2 of the termination.
- **Loss** (:meth:`RewEndModel.loss`): over a segment of ``L`` frames, the ``L - 1`` transitions
  ``(x_t, a_t, x_{t+1})``; cross-entropy on ``sign(r_t) + 1`` plus cross-entropy on ``end_t``, over the transitions
  whose step ``t`` is not padding. DIAMOND trains on segments of 19 frames (horizon 15 + 4 conditioning frames) that
  may run past the episode end. Not in the paper: batches with a share of segments drawn around rare events
  (``rew_end_event_fraction`` of the agent) add :func:`event_sampling_logit_offsets` to the logits in the loss, so
  the model keeps the buffer's base rates.
- **Imagination** (:meth:`RewEndModel.predict`): one transition per call with the LSTM state carried;
  :func:`sample_rew_end` draws the reward sign and the end from the logits, as the official ``WorldModelEnv``.

At the paper's configuration (channels [32]*4, depths [2]*4, cond 128, LSTM 512, 4 actions) it has 5,900,864
parameters, the count of the official model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from world_models.diamond.batch import WorldModelBatch
from world_models.diamond.blocks import Downsample, ResBlocks, conv3x3
from world_models.diamond.edm import LossAndLogs

Hidden = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RewEndConfig:
    """``config/agent/default.yaml`` ``rew_end_model``."""

    num_actions: int
    img_channels: int = 3
    img_size: int = 64
    cond_channels: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    lstm_dim: int = 512

    @classmethod
    def paper(cls, num_actions: int) -> RewEndConfig:
        return cls(num_actions=num_actions)

    @classmethod
    def cpu(cls, num_actions: int, img_size: int = 64) -> RewEndConfig:
        """``preset=cpu``: one block per stage, 16 channels, cond 32, LSTM 256."""
        return cls(num_actions, img_size=img_size, cond_channels=32, depths=[1, 1, 1, 1], channels=[16, 16, 16, 16],
                   lstm_dim=256)

    @classmethod
    def tiny(cls, num_actions: int, img_size: int = 64) -> RewEndConfig:
        return cls(num_actions, img_size=img_size, cond_channels=16, depths=[1, 1, 1], channels=[8, 8, 8],
                   attn_depths=[False] * 3, lstm_dim=32)

    def __post_init__(self) -> None:
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError(f"depths {self.depths}, channels {self.channels}, attn_depths {self.attn_depths}: "
                             "one entry per encoder stage")
        if self.img_size % 2 ** (len(self.depths) - 1):
            raise ValueError(f"img_size={self.img_size} must be divisible by 2^{len(self.depths) - 1}")


class RewEndModel(nn.Module):
    """Reward-sign and termination logits of transitions ``(x_t, a_t, x_{t+1})``, with an LSTM memory."""

    def __init__(self, cfg: RewEndConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, cond = cfg.channels, cfg.cond_channels
        self.conv_in = conv3x3(2 * cfg.img_channels, ch[0])
        stages = [
            ResBlocks([ch[max(0, i - 1)]] + [ch[i]] * (d - 1), [ch[i]] * d, cond, cfg.attn_depths[i])
            for i, d in enumerate(cfg.depths)
        ]
        stages.append(ResBlocks([ch[-1]] * 2, [ch[-1]] * 2, cond, attn=True))
        self.blocks = nn.ModuleList(stages)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in ch[:-1]] + [nn.Identity()])
        self.act_emb = nn.Embedding(cfg.num_actions, cond)
        side = cfg.img_size // 2 ** (len(cfg.depths) - 1)
        self.lstm = nn.LSTM(ch[-1] * side * side, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm_dim, cfg.lstm_dim), nn.SiLU(), nn.Linear(cfg.lstm_dim, 3 + 2, bias=False)
        )
        for name, p in self.lstm.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(p)
            elif "weight_hh" in name:
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
                if "bias_ih" in name:  # gates are ordered (input, forget, cell, output)
                    p.data[cfg.lstm_dim : 2 * cfg.lstm_dim] = 1.0

    def encode(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Features ``[N, D]`` of ``N`` transitions (frames ``[N, 3, H, W]``, actions ``[N]``)."""
        cond = self.act_emb(act)
        x = self.conv_in(torch.cat((obs, next_obs), dim=1))
        for block, down in zip(self.blocks, self.downsamples, strict=True):
            x, _ = block(down(x), cond)
        return x.flatten(1)

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Hidden]:
        """Sequences ``obs, next_obs [B, T, 3, H, W]``, ``act [B, T]`` -> reward logits ``[B, T, 3]``, end logits
        ``[B, T, 2]`` and the LSTM state ``(h, c)``, each ``[1, B, lstm_dim]``."""
        b, t = act.shape
        x = self.encode(obs.flatten(0, 1), act.flatten(), next_obs.flatten(0, 1)).view(b, t, -1)
        x, hidden = self.lstm(x, hidden)
        logits = self.head(x)
        return logits[..., :3], logits[..., 3:], hidden

    def predict(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Hidden]:
        """One imagined transition: ``obs, next_obs [B, 3, H, W]``, ``act [B]`` -> logits ``[B, 3]``, ``[B, 2]`` and
        the new LSTM state. Burn the state in on the real context with :meth:`forward` first."""
        logits_rew, logits_end, hidden = self(obs[:, None], act[:, None], next_obs[:, None], hidden)
        return logits_rew[:, 0], logits_end[:, 0], hidden

    def transitions(
        self, batch: WorldModelBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``L - 1`` transitions ``(x_t, a_t, x_{t+1})`` of segments ``obs [B, L, ...]`` through the model:
        reward logits ``[B, L-1, 3]``, end logits ``[B, L-1, 2]``, the reward-sign classes ``sign(r_t) + 1`` and the
        ends ``[B, L-1]`` (long, bool), and the mask of the unpadded steps ``t`` ``[B, L-1]``. The next frame of a
        terminal transition is the episode's final observation when the batch has it."""
        obs, act, next_obs = batch.obs[:, :-1], batch.act[:, :-1], batch.obs[:, 1:]
        rew, end, mask = batch.rew[:, :-1], batch.end[:, :-1], batch.mask[:, :-1]
        if batch.final_obs is not None:  # the frame after a termination: the buffer holds grey padding there
            dead = (end & mask).any(dim=1)
            if dead.any():
                next_obs = next_obs.clone()
                next_obs[dead, end[dead].float().argmax(dim=1)] = batch.final_obs[dead].to(next_obs.dtype)
        logits_rew, logits_end, _ = self(obs, act, next_obs)
        return logits_rew, logits_end, rew.sign().long() + 1, end, mask  # {-1, 0, 1} -> classes {0, 1, 2}

    def loss(
        self, batch: WorldModelBatch, logit_offsets: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> LossAndLogs:
        """``CE(reward sign) + CE(end)`` over the unpadded transitions of segments ``obs [B, L, ...]``.
        ``logit_offsets`` (``[3]``, ``[2]``) are added to the logits inside the cross-entropy only: the logit
        adjustment that undoes a batch's shifted class priors (:func:`event_sampling_logit_offsets`).
        Returns ``(loss, {"loss_rew", "loss_end"})``."""
        logits_rew, logits_end, target_rew, end, mask = self.transitions(batch)
        if logit_offsets is not None:
            logits_rew = logits_rew + logit_offsets[0].to(logits_rew)
            logits_end = logits_end + logit_offsets[1].to(logits_end)
        loss_rew = F.cross_entropy(logits_rew[mask], target_rew[mask])
        loss_end = F.cross_entropy(logits_end[mask], end[mask].long())
        loss = loss_rew + loss_end
        return loss, {"loss_rew": loss_rew.item(), "loss_end": loss_end.item()}


def event_sampling_logit_offsets(
    num_steps: int, num_neg: int, num_pos: int, num_end: int, event_share: float, seq_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log(pi_batch / pi)`` per reward-sign class ``[3]`` and end class ``[2]``: how far batches with
    ``event_share`` of their segments drawn around an event shift the class priors ``pi`` of a buffer of
    ``num_steps`` transitions holding ``num_neg`` negative and ``num_pos`` positive rewards and ``num_end`` ends.

    Adding these offsets to the logits in the cross-entropy (logit adjustment, Menon et al. 2021, "Long-tail learning
    via logit adjustment") makes the model's own logits fit the buffer's priors: the loss is minimal where
    ``softmax(logits + offsets) = pi_batch(. | x)``, so ``softmax(logits)`` is ``pi(. | x)``, and imagination samples
    rewards and ends at their real rates. The batch priors follow :func:`~agents.common.episode_sampling.
    draw_event_segment_starts`: of the ``m = seq_length - 1`` transitions of an event window one is the event (its
    kind uniform among the kinds the buffer holds; a reward window's end and an end window's reward taken at the
    buffer's rates) and ``m - 1`` follow the buffer's rates, so ``pi_batch = pi + event_share / m * (q - pi)`` with
    ``q`` the event step's class distribution. A class the buffer never holds gets offset 0."""
    n, m = float(num_steps), float(seq_length - 1)
    if n <= 0 or m <= 0 or not 0.0 <= event_share <= 1.0:
        raise ValueError(f"num_steps={num_steps} and seq_length - 1={seq_length - 1} must be > 0 and "
                         f"event_share={event_share} in [0, 1]")
    pi_rew = torch.tensor([num_neg, num_steps - num_neg - num_pos, num_pos], dtype=torch.float64) / n
    pi_end = torch.tensor([num_steps - num_end, num_end], dtype=torch.float64) / n
    kinds = [num_neg > 0, num_pos > 0, num_end > 0]  # the event kinds drawn from, each with probability 1 / k
    k = sum(kinds)
    if k == 0:
        return torch.zeros(3), torch.zeros(2)
    q_rew = (kinds[0] * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
             + kinds[1] * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) + kinds[2] * pi_rew) / k
    q_end = ((kinds[0] + kinds[1]) * pi_end + kinds[2] * torch.tensor([0.0, 1.0], dtype=torch.float64)) / k

    def offsets(pi: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        shifted = pi + event_share / m * (q - pi)
        held = pi > 0
        out = torch.zeros_like(pi)
        out[held] = shifted[held].log() - pi[held].log()
        return out.float()

    return offsets(pi_rew, q_rew), offsets(pi_end, q_end)


def sample_rew_end(logits_rew: torch.Tensor, logits_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward in ``{-1., 0., 1.}`` (float) and end (bool) drawn from the categorical logits, as in imagination."""
    rew = torch.distributions.Categorical(logits=logits_rew).sample().float() - 1
    end = torch.distributions.Categorical(logits=logits_end).sample().bool()
    return rew, end
