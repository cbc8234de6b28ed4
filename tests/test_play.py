"""runners.play: a tiny DIAMOND trained through the command line on real Breakout, then played inside its world model
by random actions, by its policy beside the real env, and by a person typing on stdin; bad values stop with one line
and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from runners import play
from runners.cli import run_main

REPO = Path(__file__).resolve().parents[1]
SIDE, SCALE, CAPTION = 64, 4, 12  # Breakout frames 64x64, the default scale, play.CAPTION_HEIGHT
CONTEXT = 4  # DIAMOND starts from num_steps_conditioning = 4 real frames


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runners import train

    run = tmp_path_factory.mktemp("play") / "run"
    argv = ["agent=diamond", "env=breakout", "preset=tiny", "device=cpu", "progress_bar=false", "torch_threads=1",
            "total_timesteps=60", "save_freq=60", "save_replay_buffer=false", "agent.initial_collect_steps=40",
            "agent.initial_collect_max_steps=40", "agent.collect_steps=20", f"run_dir={run}"]
    assert run_main(train.main, argv) == 0
    return run


def run_play(*args: str, stdin: str = "") -> subprocess.CompletedProcess:  # the command line, stdin typed in
    return subprocess.run([sys.executable, "-m", "runners.play", *args], cwd=REPO, input=stdin, capture_output=True,
                          text=True, timeout=300)


def gif_frames(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)[..., :3]


def test_diamond_offers_the_play_protocol(run_dir: Path) -> None:
    from agents.diamond.agent import Diamond

    model = Diamond.load(run_dir / "final", device="cpu")
    assert model.play_context_length == CONTEXT
    obs = np.random.default_rng(0).integers(0, 256, (1, CONTEXT, SIDE, SIDE, 3), dtype=np.uint8)
    frames = model.obs_to_frames(obs)
    assert frames.shape == (1, CONTEXT, 3, SIDE, SIDE) and frames.min() >= -1 and frames.max() <= 1
    np.testing.assert_array_equal(model.frames_to_obs(frames), obs)  # uint8 -> [-1, 1] -> uint8 is exact
    np.testing.assert_array_equal(model.frames_to_obs(torch.full((3, 2, 2), 7.0)), np.full((2, 2, 3), 255))  # clamped
    env = model.play_env(1)
    torch.testing.assert_close(env.reset_from(frames, torch.zeros(1, CONTEXT, dtype=torch.long)), frames[:, -1])
    for _ in range(3):  # imagined steps: a frame in [-1, 1], a reward sign, an end, and never a truncation
        nxt, rew, end, trunc = env.step(torch.tensor([1]))
        assert nxt.shape == (1, 3, SIDE, SIDE) and rew.item() in (-1.0, 0.0, 1.0) and end.dtype == torch.bool
        assert not trunc.any()


def test_compare_replays_the_same_actions_in_the_real_env_from_the_same_context(run_dir: Path) -> None:
    from envs.factory import make_vec_env
    from runners.evaluate import load_for_eval

    model, env, env_cfg = load_for_eval(str(run_dir / "final"), "cpu", seed=3)
    names = play.action_names(env, 4)
    assert names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    steps, scale = 6, 2
    result = play.play(model, env, play.RandomActor(4, seed=5), names, steps, scale, compare=True, seed=5,
                       verbose=False)
    gif = result["gif"]
    assert len(gif) == CONTEXT + steps and result["steps"] == steps
    assert gif[0].shape == (SIDE * scale + CAPTION, 2 * SIDE * scale, 3)
    imagined = [g[: SIDE * scale : scale, : SIDE * scale : scale] for g in gif]  # back to the 64x64 frames
    real = [g[: SIDE * scale : scale, SIDE * scale :: scale] for g in gif]
    # the same seed and the same random actions (the actor's first 3 draws make the context) in a fresh real env
    actions = play.RandomActor(4, seed=5)
    replay = make_vec_env(env_cfg, n_envs=1, seed=3, training=False)
    obs = replay.reset()
    for t in range(CONTEXT + steps):
        np.testing.assert_array_equal(real[t], obs[0])
        if t < CONTEXT:
            np.testing.assert_array_equal(imagined[t], obs[0])  # the context is real on both sides
        obs, *_ = replay.step(np.array([actions.act(obs)]))
    # an untrained world model does not imagine Breakout: the two sides part after the hand-over
    assert not np.array_equal(imagined[-1], real[-1])


def test_random_and_policy_play_write_gifs_of_the_context_and_every_imagined_step(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "random.gif"
    assert run_main(play.main, [f"model={run_dir}", "actor=random", "steps=5", f"out={out}"]) == 0  # its final/
    printed = capsys.readouterr().out
    assert gif_frames(out).shape == (CONTEXT + 5, SIDE * SCALE + CAPTION, SIDE * SCALE, 3)
    assert "played 5 steps" in printed and "imagined return" in printed
    assert "actions: 0 NOOP, 1 FIRE, 2 RIGHT, 3 LEFT" in printed

    out = tmp_path / "policy.gif"
    argv = [f"model={run_dir / 'final'}", "actor=policy", "compare=true", "steps=3", "fps=10", f"out={out}"]
    assert run_main(play.main, argv) == 0
    frames = gif_frames(out)
    assert frames.shape == (CONTEXT + 3, SIDE * SCALE + CAPTION, 2 * SIDE * SCALE, 3)
    half = SIDE * SCALE
    np.testing.assert_array_equal(frames[0, :half, :half], frames[0, :half, half:])  # the real context, twice
    assert "real return" in capsys.readouterr().out


def test_a_person_plays_by_typing_action_numbers_and_names_on_stdin(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "human.gif"
    # 0, FIRE by name (any case), an empty line repeats it, a wrong word is refused and asked again, then LEFT;
    # the input ends before the 6 steps asked for: the play stops there
    done = run_play(f"model={run_dir}", "actor=human", "input=stdin", "steps=6", f"out={out}",
                    stdin="0\nfire\n\nbogus\n3\n")
    assert done.returncode == 0, done.stderr
    played = [line.split(",")[0] for line in done.stdout.splitlines() if line.startswith("step ")]
    assert played == ["step 1: action 0 (NOOP)", "step 2: action 1 (FIRE)", "step 3: action 1 (FIRE)",
                      "step 4: action 3 (LEFT)"]
    assert "unknown action 'bogus'" in done.stderr
    assert "stopped by the end of the input after 4 steps" in done.stdout
    assert gif_frames(out).shape[0] == CONTEXT + 4


@pytest.mark.parametrize(("args", "message"), [
    (["actor=robot"], "actor='robot' is not allowed; choose one of: policy, human, random"),
    (["steps=0"], "steps=0 must be >= 1"),
    (["input=keyboard"], "input='keyboard' is not allowed; choose one of: auto, window, stdin"),
    (["out=play.mp4"], "out=play.mp4: the file must end in .gif"),
    (["model=zoo:dqn-cartpole"], "model=zoo:dqn-cartpole is a dqn checkpoint; play needs a world-model agent"),
])
def test_bad_values_stop_with_one_line_and_exit_status_2(run_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture, args: list[str],
                                                        message: str) -> None:
    argv = [f"model={run_dir}", f"out={tmp_path / 'never.gif'}", *args]
    assert run_main(play.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "never.gif").exists()


def test_the_window_maps_the_games_keys_and_escape_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    pygame = pytest.importorskip("pygame")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.crafter import CrafterEnv
    from envs.factory import make_vec_env
    from tests.test_diamond_agent import BREAKOUT

    breakout = make_vec_env(BREAKOUT, n_envs=1, seed=0)
    # ALE's own keys (get_keys_to_action): space FIRE, d RIGHT, a LEFT, e NOOP, as pygame key codes
    assert play.keymap(breakout, play.action_names(breakout, 4)) == {
        (pygame.K_e,): 0, (pygame.K_SPACE,): 1, (pygame.K_d,): 2, (pygame.K_a,): 3}
    crafter = DummyVecEnv([CrafterEnv])
    names = play.action_names(crafter, 17)
    keys = play.keymap(crafter, names)  # crafter's GUI keys, by action name
    assert names[keys[(pygame.K_SPACE,)]] == "do" and names[keys[(pygame.K_1,)]] == "make_wood_pickaxe"
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a window without a display
    actor = play.WindowActor(play.keymap(breakout, play.action_names(breakout, 4)), fps=100, size=(64, 76))
    try:
        image = np.zeros((76, 64, 3), np.uint8)
        assert actor.act(np.zeros((1, 64, 64, 3), np.uint8), image) == 0  # no key held: action 0
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
        with pytest.raises(play.StopPlay):
            actor.act(np.zeros((1, 64, 64, 3), np.uint8), image)
    finally:
        actor.close()
