"""What makes the built-in policy read its instruction: the goal head (an auxiliary training target:
the image tokens must find where the demonstration grasps), its loss and a run with it; and the
colour-permutation augmentation (one recorded scene asks for every colour)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test.train.helpers import TINY, episodes, fr3, memory_source
from vla_ros.policies.vla.config import VLAConfig
from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.presets import make_config
from vla_ros.train.data import EpisodeData, episode_goals, grasp_frames, missed_grasp_frames
from vla_ros.train.loop import TrainConfig, train

CONV = {"vision": {"kind": "conv_film", "image_size": 32, "siglip": None,
                   "conv": {"channels": [8, 8], "num_tokens": 2, "coords": True}}}
# The FR3 at its "ready" pose (0, -pi/4, 0, -3pi/4, 0, pi/2, pi/4): Franka's hand TCP at
# x 0.3069, y 0, z 0.4869 m in the base frame (libfranka's O_T_EE there).
READY_TCP_M = (0.3069, 0.0, 0.4869)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _episode(grip, q=None):
    spec = fr3()
    T = len(grip)
    q = np.tile(spec.arms[0].home_rad, (T, 1)) if q is None else q
    action = np.c_[q, grip]
    return EpisodeData(0, "pick up the red cube", np.arange(T) * 0.1, action, action, lambda s: None)


def test_the_goal_is_where_the_tool_is_at_the_first_close_after_opening():
    spec = fr3()
    home = np.asarray(spec.arms[0].home_rad)
    q = np.tile(home, (6, 1))
    q[4:, 0] = 0.5  # the grasp happens at frame 4 with joint 1 turned by 0.5 rad
    # closed at the start (a stale command), opens, closes at frame 4
    goal = episode_goals(_episode([0.0, 1.0, 1.0, 0.8, 0.2, 0.0], q), spec)
    r = np.hypot(READY_TCP_M[0], READY_TCP_M[1])  # joint 1 turns the ready TCP about the base z axis
    np.testing.assert_allclose(goal, np.tile([r * np.cos(0.5), r * np.sin(0.5), READY_TCP_M[2]], (6, 1)), atol=2e-3)
    at_home = episode_goals(_episode([1.0, 0.4]), spec)
    np.testing.assert_allclose(at_home[0], READY_TCP_M, atol=2e-3)
    assert np.all(np.isnan(episode_goals(_episode([1.0, 1.0, 0.9]), spec)))  # never closes
    assert np.all(np.isnan(episode_goals(_episode([0.0, 0.0, 0.0]), spec)))  # never opens


def test_a_regrasped_episode_s_goal_is_its_last_grasp_and_its_missed_approach_is_marked():
    spec = fr3()
    home = np.asarray(spec.arms[0].home_rad)
    #        0    1    2    3    4    5    6    7    8    9
    grip = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # closes at 2 (missed), opens at 5, closes at 7
    q = np.tile(home, (10, 1))
    q[7:, 0] = -0.4  # the second grasp happens with joint 1 turned by -0.4 rad
    assert grasp_frames(np.array(grip)) == [2, 7]
    assert grasp_frames(np.array([0.0, 0.0, 1.0, 0.2])) == [3]  # a stale close at the start is no grasp
    assert grasp_frames(np.array([1.0, 1.0])) == []
    r = np.hypot(READY_TCP_M[0], READY_TCP_M[1])
    np.testing.assert_allclose(episode_goals(_episode(grip, q), spec),
                               np.tile([r * np.cos(-0.4), r * np.sin(-0.4), READY_TCP_M[2]], (10, 1)), atol=2e-3)
    # the frames leading to the missed grasp (0, 1) are marked; the closed, empty gripper (2-4), the
    # re-approach (5, 6) and the grasp that held (7-9) are not
    np.testing.assert_array_equal(missed_grasp_frames(np.array(grip)), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    # two misses: each approach back to where the gripper opened before it
    two = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0, 0], float)
    np.testing.assert_array_equal(missed_grasp_frames(two), [1, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    # one grasp, or none: nothing missed
    assert not missed_grasp_frames(np.array([1.0, 1.0, 0.0, 0.0])).any()
    assert not missed_grasp_frames(np.array([1.0, 1.0])).any()


def test_the_goal_loss_is_the_weighted_mse_of_the_goal_head_on_known_goals():
    cfg = make_config("default", **{**TINY, **CONV}, goal_head=True, action_dim=8, state_dim=8,
                      camera_slots=("front", "wrist"))
    torch.manual_seed(0)
    model = VLAModel(cfg)
    from vla_ros.policies.vla.training import inputs_from_pixels

    pix = torch.rand(3, 2, 3, 32, 32)
    inputs = inputs_from_pixels(model, pix, ["pick up the red cube"] * 3, np.zeros((3, 8)))
    actions = torch.randn(3, cfg.chunk_size, 8)
    goals = torch.tensor([[0.1, 0.2, 0.3], [float("nan")] * 3, [-1.0, 0.0, 1.0]])
    base = model.compute_loss(inputs, actions, torch.Generator().manual_seed(1))
    assert model.last_goal_loss is None
    with_goal = model.compute_loss(inputs, actions, torch.Generator().manual_seed(1), goals, goal_weight=2.5)
    pred = model.predict_goal(inputs)
    mse = float(((pred[[0, 2]] - goals[[0, 2]]) ** 2).mean())
    assert model.last_goal_loss == pytest.approx(mse, rel=1e-5)
    assert float(with_goal - base) == pytest.approx(2.5 * mse, rel=1e-4)
    with pytest.raises(ValueError, match="no goal head"):
        VLAModel(cfg.replace(goal_head=False)).compute_loss(inputs, actions, None, goals)
    with pytest.raises(ValueError, match="conv_film"):
        make_config("default", **TINY, goal_head=True)
    assert VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).goal_head is True


def test_a_run_with_the_goal_head_logs_it_and_the_policy_loads_the_model(tmp_path):
    from vla_ros.policies.vla.policy import make_vla_policy

    src = memory_source(n=4, T=12)
    cfg = TrainConfig(data=(), out=str(tmp_path / "out"), embodiment="fr3", steps=3, batch_size=4, save_every=3,
                      val_every=3, val_episodes=1, cache_dir=str(tmp_path / "cache"), progress=False, seed=1,
                      config_overrides={**TINY, **CONV, "goal_head": True}, goal_weight=0.5)
    out = train(cfg, sources=[src]).out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["goal_loss"] >= 0.0 for r in records if "loss" in r)
    goal = json.loads((out / "training.json").read_text())["goal"]
    # the helper's episodes close the gripper at frame 4 (1 - 1.5 t / 1.1 s < 0.5); training episodes' goals
    spec = fr3()
    kept = [k for k in range(4) if k not in json.loads((out / "training.json").read_text())["val_episodes"]]
    eps = episodes(4, 12)
    goals = np.array([episode_goals(EpisodeData(k, e["task"], e["timestamps"], e["state"], e["action"],
                                                lambda s: None), spec)[0] for k, e in enumerate(eps) if k in kept])
    assert goal["weight"] == 0.5
    np.testing.assert_allclose(goal["mean_m"], goals.mean(0), atol=1e-5)
    policy = make_vla_policy(spec, checkpoint=str(out), device="cpu", warmup=False)
    assert policy.model.goal_head is not None


def test_colour_permutation_renames_the_colour_words_to_the_channels_they_now_show():
    from vla_ros.sim.scene import CUBE_COLOURS
    from vla_ros.train.augment import CHANNEL_PERMUTATIONS, COLOUR_CHANNELS, permute_colours

    # each simulated cube's colour is dominated by the channel COLOUR_CHANNELS gives it
    for word, rgba in CUBE_COLOURS.items():
        assert int(np.argmax(rgba[:3])) == COLOUR_CHANNELS[word]
    # a red, a green and a blue pixel, under every permutation
    img = torch.tensor([CUBE_COLOURS[c][:3] for c in ("red", "green", "blue")]).T.reshape(1, 3, 1, 3)
    for k, p in enumerate(CHANNEL_PERMUTATIONS):
        out, (text,) = permute_colours(img, ["pick up the red cube"], [k])
        red_pixel = out[0, :, 0, 0]
        assert text == f"pick up the {('red', 'green', 'blue')[int(torch.argmax(red_pixel))]} cube"
        np.testing.assert_allclose(red_pixel.numpy(), np.asarray(CUBE_COLOURS["red"][:3])[list(p)], rtol=1e-6)
    _, texts = permute_colours(torch.zeros(3, 2, 3, 4, 4), ["Red, then BLUE", "greenish red", "no colour"], [5, 1, 4])
    # perm 5 = (2, 1, 0) swaps red and blue; perm 1 = (0, 2, 1) swaps green and blue (whole words only)
    assert texts == ["Blue, then RED", "greenish red", "no colour"]
    with pytest.raises(ValueError, match="2 images, 1 instructions"):
        permute_colours(torch.zeros(2, 3, 4, 4), ["red"], [0])


def test_a_run_with_colour_permutation_is_reproducible_and_differs_from_one_without(tmp_path):
    src = memory_source(n=4, T=8)

    def run(name, **kw):
        cfg = TrainConfig(data=(), out=str(tmp_path / name), embodiment="fr3", steps=2, batch_size=4, save_every=2,
                          val_every=2, val_episodes=1, cache_dir=str(tmp_path / "cache"), progress=False, seed=3,
                          config_overrides=TINY, augment=False, **kw)
        out = train(cfg, sources=[src]).out
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in line]

    a, b, plain = run("a", colour_permutation=True), run("b", colour_permutation=True), run("plain")
    assert a == b and a != plain


def test_the_goal_token_puts_the_goal_heads_prediction_into_the_prefix():
    from vla_ros.policies.vla.training import inputs_from_pixels

    cfg = make_config("default", **{**TINY, **CONV}, goal_head=True, goal_token=True, action_dim=8, state_dim=8,
                      camera_slots=("front", "wrist"))
    torch.manual_seed(0)
    model = VLAModel(cfg)
    inputs = inputs_from_pixels(model, torch.rand(2, 2, 3, 32, 32), ["pick up the red cube"] * 2, np.zeros((2, 8)))
    plain = VLAModel(cfg.replace(goal_token=False))
    assert model.encode_prefix(inputs).embeds.shape[1] == plain.encode_prefix(inputs).embeds.shape[1] + 1
    actions = torch.randn(2, cfg.chunk_size, 8)
    before = float(model.compute_loss(inputs, actions, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        model.goal_head[-1].bias += 1.0  # another goal: the action loss (no goal target given) changes
    assert float(model.compute_loss(inputs, actions, torch.Generator().manual_seed(1))) != pytest.approx(before)
    with pytest.raises(ValueError, match="goal_token needs goal_head"):
        cfg.replace(goal_head=False)


def _conditioned_model():
    from vla_ros.policies.vla.training import inputs_from_pixels

    cfg = make_config("default", **{**TINY, **CONV}, goal_head=True, goal_condition=True, action_dim=8,
                      state_dim=8, camera_slots=("front", "wrist"))
    torch.manual_seed(0)
    model = VLAModel(cfg)
    inputs = inputs_from_pixels(model, torch.rand(2, 2, 3, 32, 32), ["pick up the red cube"] * 2, np.zeros((2, 8)))
    return cfg, model, inputs


def test_goal_condition_steers_the_flow_head_with_the_goal_heads_prediction_at_inference():
    cfg, model, inputs = _conditioned_model()
    prefix = model.encode_prefix(inputs)
    torch.testing.assert_close(prefix.condition, prefix.goal)
    assert not prefix.condition.requires_grad  # the action loss never trains the goal head through it
    before = model.predict_actions(inputs, torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.head.goal_in_proj.weight.zero_()
        model.head.goal_in_proj.bias.zero_()
    unconditioned = model.predict_actions(inputs, torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.goal_head[-1].bias += 1.0  # another goal: no effect once the head ignores it
    torch.testing.assert_close(model.predict_actions(inputs, torch.Generator().manual_seed(2)), unconditioned)
    assert not torch.allclose(before, unconditioned)
    for bad in ({"goal_head": False}, {"head": {"kind": "diffusion"}}):
        with pytest.raises(ValueError, match="goal_condition needs goal_head"):
            make_config("default", **{**TINY, **CONV, **bad}, goal_condition=True)
    assert VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).goal_condition is True


def test_in_training_the_flow_head_is_conditioned_on_the_true_goal_plus_noise():
    _, model, inputs = _conditioned_model()
    actions = torch.randn(2, model.config.chunk_size, 8)
    goals = torch.tensor([[0.3, -0.2, 0.5], [float("nan")] * 3])
    seen = []
    real = model.head.loss

    def spy(lm, prefix, acts, generator=None):
        seen.append(prefix.condition.detach().clone())
        return real(lm, prefix, acts, generator)

    model.head.loss = spy
    model.compute_loss(inputs, actions, torch.Generator().manual_seed(1), goals, goal_weight=0.0)
    pred = model.predict_goal(inputs)
    # teacher forcing: the known goal as given; a sample without one gets the goal head's prediction
    torch.testing.assert_close(seen[0][0], goals[0])
    torch.testing.assert_close(seen[0][1], pred[1])
    sigma = torch.tensor([0.1, 0.2, 0.0])
    model.compute_loss(inputs, actions, torch.Generator().manual_seed(1), goals, 0.0, sigma)
    model.compute_loss(inputs, actions, torch.Generator().manual_seed(1), goals, 0.0, sigma)
    noise = seen[1][0] - goals[0]
    torch.testing.assert_close(seen[1], seen[2])  # the noise comes from the step's generator
    assert 0 < abs(float(noise[0])) and 0 < abs(float(noise[1])) and float(noise[2]) == 0.0
    torch.testing.assert_close(seen[1][1], pred[1])  # no noise on a predicted goal
    # the noise is Gaussian with the given deviation per axis
    many = torch.tensor([[0.0, 0.0, 0.0]]).repeat(2, 1)
    draws = []
    for k in range(300):
        model.compute_loss(inputs, actions, torch.Generator().manual_seed(k), many, 0.0, sigma)
        draws.append(seen[-1])
    std = torch.cat(draws).std(0)
    assert float(std[0]) == pytest.approx(0.1, rel=0.15) and float(std[1]) == pytest.approx(0.2, rel=0.15)


def test_a_run_with_goal_noise_converts_it_to_goal_units_and_logs_it(tmp_path):
    from vla_ros.train.loop import Trainer

    src = memory_source(n=4, T=12)
    base = dict(data=(), embodiment="fr3", steps=2, batch_size=4, save_every=2, val_every=2, val_episodes=1,
                cache_dir=str(tmp_path / "cache"), progress=False, seed=1)
    cfg = TrainConfig(out=str(tmp_path / "out"), **base, goal_noise_m=0.02,
                      config_overrides={**TINY, **CONV, "goal_head": True, "goal_condition": True})
    trainer = Trainer(cfg, sources=[src])
    out = trainer.run().out
    goal = json.loads((out / "training.json").read_text())["goal"]
    assert goal["condition"] is True and goal["noise_m"] == 0.02
    np.testing.assert_allclose(trainer.goal_noise.numpy(), 0.02 / np.asarray(goal["std_m"]), rtol=1e-4)
    with pytest.raises(ValueError, match="needs config goal_condition"):
        train(TrainConfig(out=str(tmp_path / "plain"), **base, goal_noise_m=0.02,
                          config_overrides={**TINY, **CONV, "goal_head": True}), sources=[src])
    with pytest.raises(ValueError, match="goal_noise_m must be"):
        TrainConfig(out=str(tmp_path / "x"), **base, goal_noise_m=-1.0)


def test_an_action_head_that_does_not_read_the_instruction_gets_it_only_through_the_goal():
    from vla_ros.policies.vla.training import inputs_from_pixels

    cfg = make_config("default", **{**TINY, **CONV}, goal_head=True, goal_condition=True,
                      action_reads_instruction=False, action_dim=8, state_dim=8, camera_slots=("front", "wrist"))
    torch.manual_seed(0)
    model = VLAModel(cfg)
    with torch.no_grad():  # FiLM layers start at zero (the identity): give the instruction a say
        for film in model.vision.films:
            film.gamma.weight.normal_(0.0, 0.5)
    pix = torch.rand(1, 2, 3, 32, 32)
    red, blue = (inputs_from_pixels(model, pix, [f"pick up the {c} cube"], np.zeros((1, 8))) for c in ("red", "blue"))
    p_red, p_blue = model.encode_prefix(red), model.encode_prefix(blue)
    # the same prefix (image tokens + state, no text tokens) whatever the instruction ...
    assert p_red.embeds.shape[1] == 2 * 2 + 1
    torch.testing.assert_close(p_red.embeds, p_blue.embeds)
    # ... but the goal (the instruction-conditioned tokens through the goal head) differs,
    assert not torch.allclose(p_red.goal, p_blue.goal)
    # and with the same goal forced the actions are the same: nothing else carries the instruction
    from dataclasses import replace

    g = torch.Generator().manual_seed(4)
    a_red = model.head.sample(model.backbone, replace(p_red, condition=p_blue.condition), g)
    a_blue = model.head.sample(model.backbone, p_blue, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a_red, a_blue)
    with pytest.raises(ValueError, match="action_reads_instruction=False needs goal_condition"):
        cfg.replace(goal_condition=False)


def test_goal_normalisation_floors_the_spread_and_adds_no_noise_where_the_goals_do_not_vary():
    from vla_ros.train.loop import GOAL_STD_FLOOR_M, goal_normalisation

    # x spread 0.05 m, y 0.1 m, z all at table height (2 mm apart)
    goals = np.array([[0.40, -0.1, 0.019], [0.50, 0.1, 0.021], [0.45, 0.0, 0.020], [0.45, 0.0, 0.020]])
    mean, std, noise = goal_normalisation(goals, 0.025)
    np.testing.assert_allclose(mean, [0.45, 0.0, 0.020])
    np.testing.assert_allclose(std, [np.sqrt(0.0025 / 2), np.sqrt(0.01 / 2), GOAL_STD_FLOOR_M])
    np.testing.assert_allclose(noise, [0.025 / std[0], 0.025 / std[1], 0.0])
