"""Play inside a world model: a policy, a person or random actions act, the world model imagines what follows.

    python -m runners.play model=<run dir|final dir|zoo:name> [actor=policy|human|random] [steps=50] [seed=0]
                           [out=results/plots/play_<name>.gif] [fps=5] [scale=4] [compare=false]
                           [deterministic=auto] [input=auto|window|stdin] [context=env]
                           [device=auto]

As DIAMOND's ``src/play.py`` (github.com/eloialonso/diamond): the real env (the checkpoint's env config, built as
``runners.evaluate`` builds it) is reset with ``seed`` and played for the ``play_context_length`` frames the world
model starts from (``context=env``; the policy acts there when ``actor=policy``, random actions otherwise); then the
world model takes over: at each of ``steps`` steps the actor picks an action on the imagined frame and the world model
imagines the next frame, the reward and the end. An imagined end is counted and the imagination goes on.

- ``actor=policy``: the agent's ``predict`` on the imagined uint8 frames, its recurrent state carried
  (``deterministic=auto``, the default, is the agent's official test protocol: DIAMOND and Δ-IRIS sample);
  ``actor=random``: uniform actions; ``actor=human``: a pygame window (``input=window``; the game's keys, Escape
  quits) where a display exists, otherwise action numbers or names typed on stdin, one per line (an empty line
  repeats the last action, end of input stops). The actions are listed at the start.
- ``out=`` gets a GIF: the real context frames, then the imagined ones, each ``scale`` times larger with a caption;
  ``compare=true`` puts beside them the real env played with the same actions from the same context (the real env
  goes on from the context's last frame, which is the imagined episode's first). Atari here has no sticky actions,
  so both start identical and part where the world model errs or where the game depends on what the context frames
  do not show (the emulator's hidden state); the imagined rewards and ends are sampled, so they differ from run to
  run unless ``seed`` is the same. After a real episode ends its last frame stays.

Any agent with the play protocol plugs in (``play_context_length``, ``play_env``, ``obs_to_frames``,
``frames_to_obs``: DIAMOND, Δ-IRIS); bad values stop with one line and exit status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image, ImageDraw

from agents.common.evaluation import resolve_deterministic
from runners.cli import (
    UsageError,
    check_keys,
    parse_args,
    parse_bool,
    parse_choice,
    parse_deterministic,
    parse_device,
    parse_int,
    parse_out_path,
    run_main,
)
from runners.evaluate import load_for_eval

KEYS = ("model", "actor", "steps", "seed", "out", "fps", "scale", "compare", "deterministic", "input", "context",
        "device", "debug")
ACTORS = ("policy", "human", "random")
INPUTS = ("auto", "window", "stdin")
CONTEXTS = ("env",)
PROTOCOL = ("play_context_length", "play_env", "obs_to_frames", "frames_to_obs")
CAPTION_HEIGHT = 12  # pixels of the caption under each panel of the GIF
#: crafter's own GUI keys (crafter/run_gui.py), by action name
CRAFTER_KEYS = {"a": "move_left", "d": "move_right", "w": "move_up", "s": "move_down", " ": "do", "\t": "sleep",
                "r": "place_stone", "t": "place_table", "f": "place_furnace", "p": "place_plant",
                "1": "make_wood_pickaxe", "2": "make_stone_pickaxe", "3": "make_iron_pickaxe",
                "4": "make_wood_sword", "5": "make_stone_sword", "6": "make_iron_sword"}


class StopPlay(Exception):
    """The person stopped (Escape, a closed window, the end of stdin)."""


# ---------------------------------------------------------------------------------------------------- actors
class RandomActor:
    def __init__(self, num_actions: int, seed: int) -> None:
        self.num_actions, self.rng = num_actions, np.random.default_rng(seed)

    def act(self, obs: np.ndarray, image: np.ndarray | None = None) -> int:
        return int(self.rng.integers(self.num_actions))


class PolicyActor:
    """The agent's ``predict`` with its recurrent state carried from the first real frame on."""

    def __init__(self, model: Any, deterministic: bool) -> None:
        self.model, self.deterministic, self.state, self.start = model, deterministic, None, np.ones(1, bool)

    def act(self, obs: np.ndarray, image: np.ndarray | None = None) -> int:
        action, self.state = self.model.predict(obs, self.state, self.start, deterministic=self.deterministic)
        self.start = np.zeros(1, bool)
        return int(np.asarray(action).reshape(-1)[0])


class StdinActor:
    """Action numbers or names (any case), one per line; an empty line repeats the last action."""

    def __init__(self, names: list[str], stream: Any = sys.stdin) -> None:
        self.names, self.stream, self.last = names, stream, 0
        self.lookup = {name.lower(): i for i, name in enumerate(names)} | {str(i): i for i in range(len(names))}

    def act(self, obs: np.ndarray, image: np.ndarray | None = None) -> int:
        while True:
            if self.stream.isatty():
                print(f"action [{self.names[self.last]}]: ", end="", flush=True)
            line = self.stream.readline()
            if not line:
                raise StopPlay("the end of the input")
            word = line.strip().lower()
            if not word:
                return self.last
            if word in self.lookup:
                self.last = self.lookup[word]
                return self.last
            print(f"unknown action {word!r}; type a number 0-{len(self.names) - 1} or a name", file=sys.stderr)


class WindowActor:
    """A pygame window showing the frames; the keys held at each step pick the action (none: action 0)."""

    def __init__(self, keymap: dict[tuple[int, ...], int], fps: int, size: tuple[int, int]) -> None:
        import pygame

        self.pg, self.keymap, self.fps = pygame, keymap, fps
        pygame.display.init()  # the display only: no audio device is needed
        self.screen = pygame.display.set_mode(size)
        pygame.display.set_caption("runners.play: the world model (Escape quits)")
        self.clock = pygame.time.Clock()

    def act(self, obs: np.ndarray, image: np.ndarray | None = None) -> int:
        pg = self.pg
        if image is not None:
            surface = pg.surfarray.make_surface(np.ascontiguousarray(image.swapaxes(0, 1)))
            self.screen.blit(pg.transform.scale(surface, self.screen.get_size()), (0, 0))
            pg.display.flip()
        self.clock.tick(self.fps)
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE):
                raise StopPlay("the window")
        held = pg.key.get_pressed()
        pressed = tuple(sorted(k for keys in self.keymap for k in keys if held[k]))
        return self.keymap.get(pressed, 0)

    def close(self) -> None:
        self.pg.quit()


def action_names(env: Any, num_actions: int) -> list[str]:
    """The actions' meanings: ALE's ``get_action_meanings``, Crafter's ``action_names``, else their numbers."""
    game = env.get_attr("unwrapped")[0]
    if hasattr(game, "get_action_meanings"):
        return list(game.get_action_meanings())
    if hasattr(game, "action_names"):
        return list(game.action_names)
    return [str(i) for i in range(num_actions)]


def keymap(env: Any, names: list[str]) -> dict[tuple[int, ...], int]:
    """Held keys (pygame codes, sorted) -> action: ALE's ``get_keys_to_action``, crafter's GUI keys, else digits."""
    game = env.get_attr("unwrapped")[0]
    if hasattr(game, "get_keys_to_action"):
        return {tuple(sorted(k if isinstance(k, int) else ord(k) for k in keys)): int(a)
                for keys, a in game.get_keys_to_action().items()}
    index = {name: i for i, name in enumerate(names)}
    if all(name in index for name in CRAFTER_KEYS.values()):
        return {(ord(key),): index[name] for key, name in CRAFTER_KEYS.items()}
    return {(ord(str(i)),): i for i in range(min(10, len(names)))}


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def make_actor(kind: str, source: str, model: Any, env: Any, seed: int, deterministic: bool, fps: int,
               size: tuple[int, int]) -> tuple[Any, list[str]]:
    n = int(env.action_space.n)
    names = action_names(env, n)
    print(f"actions: {', '.join(f'{i} {name}' for i, name in enumerate(names))}")
    if kind == "policy":
        return PolicyActor(model, deterministic), names
    if kind == "random":
        return RandomActor(n, seed), names
    window = source == "window" or (source == "auto" and has_display())
    if window:
        try:
            import pygame  # noqa: F401
        except ImportError:
            if source == "window":
                raise UsageError("input=window needs pygame; install it or use input=stdin") from None
            window = False
    if window:
        keys = keymap(env, names)
        shown = ", ".join(f"{'+'.join(chr(k) if chr(k).isprintable() and k != 32 else 'space' for k in ks)} "
                          f"{names[a]}" for ks, a in keys.items())
        print(f"keys: {shown}; no key: {names[0]}; Escape quits")
        return WindowActor(keys, fps, size), names
    print("type one action per line (number or name; empty line repeats the last one)")
    return StdinActor(names), names


# ---------------------------------------------------------------------------------------------------- frames
def panel(obs: np.ndarray, scale: int, caption: str) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[H * scale + CAPTION_HEIGHT, W * scale, 3]``, the caption written below."""
    big = np.repeat(np.repeat(obs, scale, axis=0), scale, axis=1)
    strip = Image.new("RGB", (big.shape[1], CAPTION_HEIGHT))
    ImageDraw.Draw(strip).text((2, 0), caption, fill=(255, 255, 255))
    return np.concatenate([big, np.asarray(strip)], axis=0)


def compose(panels: list[tuple[np.ndarray, str]], scale: int) -> np.ndarray:
    return np.concatenate([panel(obs, scale, caption) for obs, caption in panels], axis=1)


# ---------------------------------------------------------------------------------------------------- play
def real_context(env: Any, actor: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real frames ``[1, n, H, W, 3]`` of one episode and the actions taken in them ``[1, n]`` (the last is
    a placeholder: the first imagined step replaces it); the env is left at the last frame."""
    obs, frames, acts = env.reset(), [], []
    for _ in range(100 * n):
        frames.append(obs[0])
        if len(frames) == n:
            return np.stack(frames)[None], np.array([acts + [0]], np.int64)
        acts.append(actor.act(obs))
        obs, _, done, _ = env.step(np.array([acts[-1]]))
        if done[0]:  # the episode ended inside the context: start it again in the next one
            frames, acts = [], []
    raise ValueError(f"the env's episodes are shorter than the {n} frames the world model starts from")


def play(model: Any, env: Any, actor: Any, names: list[str], steps: int, scale: int, compare: bool, seed: int,
         verbose: bool) -> dict[str, Any]:
    """Build the real context, then ``steps`` imagined steps; returns the GIF frames and the summary."""
    n = int(model.play_context_length)
    context_actor = actor if isinstance(actor, PolicyActor | RandomActor) else RandomActor(len(names), seed)
    ctx_obs, ctx_act = real_context(env, context_actor, n)
    gif = [compose([(ctx_obs[0, i], f"real context {i + 1}/{n}")] * (2 if compare else 1), scale) for i in range(n)]
    wm = model.play_env(1)
    frames = model.obs_to_frames(ctx_obs)
    first = wm.reset_from(frames, torch.as_tensor(ctx_act, device=frames.device))
    obs = model.frames_to_obs(first).reshape(1, *ctx_obs.shape[-3:])
    real_obs, real_done, real_return, imagined_return, ends, played = ctx_obs[:, -1], False, 0.0, 0.0, [], 0
    for t in range(1, steps + 1):
        try:
            a = actor.act(obs, gif[-1])
        except StopPlay as stop:
            print(f"stopped by {stop} after {played} steps")
            break
        next_frames, rew, end, _ = wm.step(torch.tensor([a], device=frames.device))
        obs = model.frames_to_obs(next_frames).reshape(1, *ctx_obs.shape[-3:])
        r, e = float(rew.reshape(-1)[0]), bool(end.reshape(-1)[0])
        imagined_return, played = imagined_return + r, t
        if e:
            ends.append(t)
        shown = [(obs[0], f"imagined {t} {names[a]} r{r:+.0f}{' END' if e else ''}")]
        if compare:
            real_caption = "real: episode over"
            if not real_done:
                real_obs, real_r, done, infos = env.step(np.array([a]))
                real_return += float(real_r[0])
                real_done = bool(done[0])
                real_obs = infos[0]["terminal_observation"][None] if real_done else real_obs
                real_caption = f"real {t} r{float(real_r[0]):+.0f}{' END' if real_done else ''}"
            shown.append((real_obs[0], real_caption))
        gif.append(compose(shown, scale))
        if verbose:
            print(f"step {t}: action {a} ({names[a]}), imagined reward {r:+.0f}{', end' if e else ''}")
    return {"gif": gif, "steps": played, "imagined_return": imagined_return, "ends": ends,
            "real_return": real_return if compare else None, "context": n}


def model_path(reference: str) -> str:
    """A run directory stands for its ``final/`` model."""
    if reference.startswith("zoo:"):
        return reference
    path = Path(reference)
    return str(path / "final") if (path / "final").is_dir() else reference


def default_out(reference: str) -> Path:
    if reference.startswith("zoo:"):
        name = reference[4:]
    else:
        path = Path(reference).resolve()
        name = path.parent.name if path.name == "final" else path.name
    return Path("results/plots") / f"play_{name}.gif"


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, KEYS, "runners.play")
    if "model" not in pairs:
        raise UsageError("missing model=<run dir, checkpoint dir or zoo:name> of a world-model agent (diamond)")
    actor_kind = parse_choice("actor", pairs.get("actor", "policy"), ACTORS)
    source = parse_choice("input", pairs.get("input", "auto"), INPUTS)
    parse_choice("context", pairs.get("context", "env"), CONTEXTS)
    steps = parse_int("steps", pairs.get("steps", "50"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    fps = parse_int("fps", pairs.get("fps", "5"), minimum=1)
    scale = parse_int("scale", pairs.get("scale", "4"), minimum=1)
    compare = parse_bool("compare", pairs.get("compare", "false"))
    device = parse_device(pairs.get("device", "auto"))
    out = Path(pairs["out"]) if "out" in pairs else default_out(pairs["model"])
    if out.suffix != ".gif":
        raise UsageError(f"out={out}: the file must end in .gif")
    if "out" in pairs:
        parse_out_path("out", pairs["out"])
    deterministic = parse_deterministic("deterministic", pairs.get("deterministic", "auto"))

    torch.manual_seed(seed)
    model, env, _ = load_for_eval(model_path(pairs["model"]), device, seed)
    missing = [name for name in PROTOCOL if not hasattr(model, name)]
    if missing:
        env.close()
        raise UsageError(f"model={pairs['model']} is a {getattr(model, 'agent_id', type(model).__name__)} "
                         "checkpoint; play needs a world-model agent (diamond, delta_iris)")
    deterministic = resolve_deterministic(model, deterministic)
    blank = (np.zeros((*env.observation_space.shape[:2], 3), np.uint8), "")
    size = compose([blank] * (2 if compare else 1), scale).shape[1::-1]  # (width, height) of the window
    actor, names = make_actor(actor_kind, source, model, env, seed, deterministic, fps, size)
    try:
        with torch.no_grad():
            result = play(model, env, actor, names, steps, scale, compare, seed, verbose=actor_kind == "human")
    finally:
        env.close()
        if isinstance(actor, WindowActor):
            actor.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, result["gif"], duration=1000 / fps, loop=0)
    ends = ", ".join(map(str, result["ends"][:10])) + (", ..." if len(result["ends"]) > 10 else "") or "none"
    real = f"; real return {result['real_return']:.1f}" if compare else ""
    print(f"played {result['steps']} steps in the world model after {result['context']} real frames ({actor_kind}): "
          f"imagined return {result['imagined_return']:+.1f}, {len(result['ends'])} ends (steps: {ends}){real}; "
          f"wrote {out} ({len(result['gif'])} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
