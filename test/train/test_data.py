"""Training data: chunks from recorded commands (hand-checked rows, the adapter's inverse), the
frame cache (the policy's own resize, reused), episode-level split and statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test.train.helpers import episodes, fr3, memory_source
from vla_ros.core.action_spaces import ActionAdapter, action_names
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import ActionChunk
from vla_ros.policies.preprocess import images_to_tensor, resize
from vla_ros.train.data import ChunkConverter, EpisodeData, MemorySource, TrainingDataError, build_training_set

PERIOD = 0.1


def _episode(fps=20.0, T=9):
    e = episodes(n=1, T=T, fps=fps)[0]
    return EpisodeData(0, e["task"], e["timestamps"], e["state"], e["action"], lambda s: e["frames"][s])


def test_joint_position_chunk_rows_are_the_commands_one_period_apart_held_at_the_end():
    spec = fr3()
    ep = _episode(fps=20.0, T=9)  # 0.05 s frames: a 0.1 s row is every second frame
    conv = ChunkConverter(spec, "joint_position", action_names(spec, "joint_position"))
    chunks, valid = conv.episode_chunks(ep, PERIOD, 4)
    assert chunks.shape == (9, 4, 8) and valid.shape == (9, 4)
    np.testing.assert_allclose(chunks[0], ep.action[[0, 2, 4, 6]], atol=1e-6)
    np.testing.assert_allclose(chunks[3], ep.action[[3, 5, 7, 8]], atol=1e-6)  # 3 + 6 = 9 > 8: held
    assert valid[3].tolist() == [True, True, True, False]
    assert valid[0].all() and not valid[8, 1:].any()


def test_fractional_stride_interpolates_linearly_in_time():
    spec = fr3()
    ep = _episode(fps=15.0, T=7)
    conv = ChunkConverter(spec, "joint_position", action_names(spec, "joint_position"))
    chunks, _ = conv.episode_chunks(ep, PERIOD, 2)
    # row 1 of frame 0 lies at t = 0.1 s = frame 1.5: the mean of frames 1 and 2
    np.testing.assert_allclose(chunks[0, 1], 0.5 * (ep.action[1] + ep.action[2]), atol=1e-6)


def test_reordered_dataset_columns_are_taken_by_name():
    spec = fr3()
    names = list(action_names(spec, "joint_position"))
    ep = _episode(fps=10.0, T=5)
    perm = [7, 3, 0, 1, 2, 4, 5, 6]
    shuffled = EpisodeData(0, ep.task, ep.timestamps, ep.state, ep.action[:, perm], ep.frames)
    conv = ChunkConverter(spec, "joint_position", [names[i] for i in perm])
    chunks, _ = conv.episode_chunks(shuffled, PERIOD, 2)
    np.testing.assert_allclose(chunks[0, 0], ep.action[0], atol=1e-7)


@pytest.mark.parametrize("space", ["ee_delta", "joint_delta", "ee_pose"])
def test_relative_chunks_replay_the_recorded_commands_through_the_controllers_adapter(space):
    spec = fr3()
    kin = RobotKinematics.from_embodiment(spec)
    ep = _episode(fps=10.0, T=8)
    conv = ChunkConverter(spec, space, action_names(spec, "joint_position"), kinematics=kin)
    chunks, _ = conv.episode_chunks(ep, PERIOD, 4)
    adapter = ActionAdapter(spec, kin, space)
    t = 2
    q_ref = ep.action[t, :7].astype(np.float64)
    if space != "ee_pose":
        np.testing.assert_allclose(chunks[t, 0, :-1], 0.0, atol=1e-9)  # row 0 = the command at the stamp
    chunk = ActionChunk(conv.names, chunks[t], PERIOD, 0.0)
    targets = adapter.to_joint_targets(chunk, q_ref)
    if space == "joint_delta":
        np.testing.assert_allclose(targets.positions, ep.action[t:t + 4, :7], atol=1e-6)
    else:  # a 7-DoF arm: IK may take another joint path to the same tool poses
        base, tool = kin.arm_frames("arm")
        for q_got, q_want in zip(targets.positions, ep.action[t:t + 4, :7].astype(np.float64)):
            np.testing.assert_allclose(kin.frame_pose(q_got, tool, base), kin.frame_pose(q_want, tool, base),
                                       atol=2e-4)
    np.testing.assert_allclose(targets.gripper[:, 0], ep.action[t:t + 4, 7], atol=1e-6)


def test_foreign_action_names_are_refused_with_the_way_out():
    spec = fr3()
    with pytest.raises(TrainingDataError, match="--action-space dataset"):
        ChunkConverter(spec, "ee_delta", ["shoulder", "elbow", "gripper"])
    with pytest.raises(TrainingDataError, match="unknown action space 'ee_twist'"):
        ChunkConverter(spec, "ee_twist", action_names(spec, "joint_position"))
    raw = ChunkConverter(spec, "dataset", ["a", "b"])
    assert raw.names == ("a", "b")


def test_training_set_caches_frames_with_the_policys_resize_and_reuses_them(tmp_path):
    spec = fr3()
    src = memory_source(n=4, T=6, size=40)
    conv = ChunkConverter(spec, "joint_position", src.action_names)
    ts = build_training_set([src], conv, PERIOD, 3, ("front", "wrist"), 32, tmp_path, val_episodes=1, seed=0,
                            state_dim=8)
    assert ts.num_samples == 24 and ts.actions.shape == (24, 3, 8) and ts.states.shape == (24, 8)
    assert ts.frame_in_episode().tolist() == list(range(6)) * 4
    ep2 = src.episode(2)
    expected = resize(images_to_tensor(ep2.frames("wrist")), 32).permute(0, 2, 3, 1).numpy()
    rows = np.flatnonzero(ts.sample_episode == 2)
    got = ts.pixels(rows)  # (6, 2, 32, 32, 3)
    np.testing.assert_array_equal(got[:, 1], expected)
    # the split holds whole episodes out
    assert len(ts.val_episodes) == 1
    assert set(ts.sample_episode[ts.val_index]) == set(ts.val_episodes)
    assert not set(ts.sample_episode[ts.train_index]) & set(ts.val_episodes)
    caches = sorted(tmp_path.glob("*.npy"))
    assert len(caches) == 2
    stamp = [p.stat().st_mtime_ns for p in caches]
    ts2 = build_training_set([src], conv, PERIOD, 3, ("front", "wrist"), 32, tmp_path, val_episodes=1, seed=0)
    assert [p.stat().st_mtime_ns for p in caches] == stamp  # reused, not rewritten
    np.testing.assert_array_equal(ts2.pixels(rows), got)


def test_statistics_come_from_the_training_episodes_valid_rows_only(tmp_path):
    spec = fr3()
    src = memory_source(n=5, T=6)
    conv = ChunkConverter(spec, "joint_position", src.action_names)
    ts = build_training_set([src], conv, PERIOD, 3, ("front",), 32, tmp_path, val_episodes=2, seed=3)
    stats = ts.norm_stats()
    train_rows = ts.actions[ts.train_index][ts.valid[ts.train_index]]
    assert train_rows.shape[0] < ts.actions[ts.train_index].reshape(-1, 8).shape[0]  # padded rows left out
    np.testing.assert_allclose(stats["action"].q99, np.quantile(train_rows.astype(np.float64), 0.99, axis=0))
    np.testing.assert_allclose(stats["action"].mean, train_rows.astype(np.float64).mean(0))
    np.testing.assert_allclose(stats["state"].min, ts.states[ts.train_index].min(0))


def test_a_camera_the_data_lacks_is_named(tmp_path):
    spec = fr3()
    src = memory_source(n=2, T=4)
    conv = ChunkConverter(spec, "joint_position", src.action_names)
    with pytest.raises(TrainingDataError, match=r"no camera \['top'\]"):
        build_training_set([src], conv, PERIOD, 3, ("top",), 32, tmp_path)



def test_episodes_cut_short_are_left_out_and_the_rest_keep_their_frames(tmp_path):
    spec = fr3()
    eps = episodes(n=4, T=6, size=40)
    # episode 1 is a recording cut short: one frame (seen when a save came right after a start)
    eps[1] = {k: ({s: f[:1] for s, f in v.items()} if k == "frames" else v[:1] if isinstance(v, np.ndarray) else v)
              for k, v in eps[1].items()}
    names = action_names(spec, "joint_position")
    src = MemorySource(eps, 10.0, names, names, ("front", "wrist"), name="cut", robot_type="fr3")
    conv = ChunkConverter(spec, "joint_position", src.action_names)
    said = []
    ts = build_training_set([src], conv, PERIOD, 3, ("front", "wrist"), 32, tmp_path, val_episodes=0,
                            min_episode_frames=2, log_fn=said.append)
    assert ts.num_samples == 18 and sorted({k for _, k in ts.episode_keys}) == [0, 2, 3]
    assert any("leaving out 1 episode(s) shorter than 2 frames: [1]" in s for s in said)
    # the frames after the left-out episode are still the right ones (cache rows skip its frame)
    rows = np.flatnonzero(ts.sample_episode == ts.episode_keys.index((0, 2)))
    expected = resize(images_to_tensor(eps[2]["frames"]["wrist"]), 32).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ts.pixels(rows)[:, 1], expected)
    every = build_training_set([src], conv, PERIOD, 3, ("front", "wrist"), 32, tmp_path, val_episodes=0)
    assert every.num_samples == 19  # by default only empty episodes are left out


def test_max_episodes_keeps_the_first_ones_in_data_order(tmp_path):
    # a learning curve's smaller datasets are prefixes of the full one, across --data folders too
    spec = fr3()
    a, b = memory_source(n=2, T=6, name="a"), memory_source(n=3, T=5, name="b")
    conv = ChunkConverter(spec, "joint_position", a.action_names)
    ts = build_training_set([a, b], conv, PERIOD, 3, ("front",), 32, tmp_path, val_episodes=0, max_episodes=3)
    assert list(ts.episode_keys) == [(0, 0), (0, 1), (1, 0)]
    assert ts.num_samples == 6 + 6 + 5
    every = build_training_set([a, b], conv, PERIOD, 3, ("front",), 32, tmp_path, val_episodes=0)
    assert every.num_samples == 6 + 6 + 5 + 5 + 5


def test_skip_missed_grasps_leaves_out_the_approach_to_a_grasp_let_go_again(tmp_path):
    spec = fr3()
    eps = episodes(n=2, T=10)
    # episode 0 misses: closes at 2, opens at 5, closes at 7; episode 1 grasps once (at frame 7)
    eps[0]["action"][:, 7] = [1, 1, 0, 0, 0, 1, 1, 0, 0, 0]
    eps[1]["action"][:, 7] = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    names = action_names(spec, "joint_position")
    src = MemorySource(eps, 10.0, names, names, ("front",), name="miss", robot_type="fr3")
    conv = ChunkConverter(spec, "joint_position", src.action_names)
    said = []
    ts = build_training_set([src], conv, PERIOD, 3, ("front",), 32, tmp_path, val_episodes=0, goals=True,
                            skip_missed_grasps=True, log_fn=said.append)
    every = build_training_set([src], conv, PERIOD, 3, ("front",), 32, tmp_path, val_episodes=0, goals=True)
    assert every.num_samples == 20 and ts.num_samples == 18
    first = ts.sample_episode == 0
    # the samples left are frames 2..9 of episode 0 (its frame numbers kept: early-frame weighting
    # counts from the episode's start) and all of episode 1; their chunks, states, goals and cached
    # frames are those of the same frames in the full set
    np.testing.assert_array_equal(ts.frame_in_episode()[first], np.arange(2, 10))
    np.testing.assert_array_equal(ts.frame_in_episode()[~first], np.arange(10))
    np.testing.assert_array_equal(ts.actions, every.actions[2:])
    np.testing.assert_array_equal(ts.states, every.states[2:])
    np.testing.assert_array_equal(ts.goals, every.goals[2:])
    np.testing.assert_array_equal(ts.pixels(np.arange(18)), every.pixels(np.arange(2, 20)))
    assert any("leaving out the approaches to missed grasps, 2 frames of 1 episode(s): [0]" in s for s in said)
