"""The training loop on a tiny model: schedule and sample order by hand, a run's outputs (a
model `policy:=vla` loads, metrics, curve, statistics of the data), exact resume from a
checkpoint, LoRA (vision frozen, merged save equal to the adapted model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test.train.helpers import TINY, fr3, memory_source
from vla_ros.core.action_spaces import action_names
from vla_ros.core.normalization import NormStats
from vla_ros.core.types import Observation
from vla_ros.policies.vla.model import VLAModel
from vla_ros.train.loop import BatchOrder, TrainConfig, Trainer, lr_at, train, weighted_ids


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread is faster and deterministic
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, **kw):
    base = dict(data=(), out=str(tmp_path / "out"), embodiment="fr3", config_overrides=TINY, steps=4, batch_size=4,
                save_every=2, val_every=2, val_episodes=1, cache_dir=str(tmp_path / "cache"), progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _first_frame_chunk(checkpoint, src):
    """The chunk the vla policy loaded from `checkpoint` gives for episode 0's first frame."""
    from vla_ros.policies.vla.policy import make_vla_policy

    policy = make_vla_policy(fr3(), checkpoint=str(checkpoint), device="cpu", warmup=False)
    e = src.episode(0)
    names = tuple(fr3().joint_names) + ("fr3_finger_joint1",)
    obs = Observation(stamp_s=1.0, images={s: e.frames(s)[0] for s in ("front", "wrist")}, joint_names=names,
                      joint_positions=np.r_[e.state[0, :7], 0.04], instruction=e.task)
    return policy.infer(obs)


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def test_learning_rate_schedule():
    cfg = TrainConfig(data=("x",), out="o", lr=1e-3, warmup_steps=4, steps=14)
    assert [lr_at(s, cfg) for s in (0, 3)] == pytest.approx([2.5e-4, 1e-3])
    assert lr_at(4, cfg) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(9, cfg) == pytest.approx(0.5e-3)  # half-way through the 10 decay steps
    assert lr_at(14, cfg) == pytest.approx(0.0, abs=1e-12)
    const = TrainConfig(data=("x",), out="o", lr=1e-3, warmup_steps=0, steps=14, schedule="constant")
    assert lr_at(13, const) == 1e-3


def test_batches_cover_every_sample_once_per_epoch_and_repeat_with_the_seed():
    ids = np.arange(10, 17)  # 7 samples
    order = BatchOrder(ids, 3, seed=4)
    flat = np.concatenate([order.batch(s) for s in range(7)])  # 21 = 3 epochs
    for e in range(3):
        assert sorted(flat[7 * e:7 * (e + 1)]) == list(range(10, 17))
    again = BatchOrder(ids, 3, seed=4)
    assert np.array_equal(again.batch(5), order.batch(5))
    assert not np.array_equal(BatchOrder(ids, 3, seed=5).batch(0), order.batch(0))


def test_early_frames_are_drawn_weight_times_per_epoch():
    # two episodes of 4 and 3 frames; samples 0..6; frame numbers 0 1 2 3 | 0 1 2
    frame = np.array([0, 1, 2, 3, 0, 1, 2])
    ids = np.array([1, 2, 3, 4, 6])  # frame 0 of episode 0 and frame 1 of episode 1 held out
    assert weighted_ids(ids, frame, early_frames=2, weight=3).tolist() == [1, 1, 1, 2, 3, 4, 4, 4, 6]
    assert weighted_ids(ids, frame, early_frames=0, weight=3).tolist() == ids.tolist()
    assert weighted_ids(ids, frame, early_frames=2, weight=1).tolist() == ids.tolist()
    order = BatchOrder(weighted_ids(ids, frame, 2, 3), 3, seed=0)
    epoch = np.concatenate([order.batch(s) for s in range(3)])  # 9 draws = one epoch
    assert sorted(epoch.tolist()) == [1, 1, 1, 2, 3, 4, 4, 4, 6]
    with pytest.raises(ValueError, match="early_weight"):
        TrainConfig(data=("x",), out="o", early_frames=5, early_weight=0)
    with pytest.raises(ValueError, match="early_frames"):
        TrainConfig(data=("x",), out="o", early_frames=-1)


def test_a_run_writes_a_model_the_vla_policy_loads_with_the_datas_statistics(tmp_path):
    src = memory_source(n=4, T=8)
    result = train(_cfg(tmp_path), sources=[src])
    out = result.out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert all(np.isfinite(r.get("loss", r.get("val_loss"))) for r in records)
    assert (out / "loss_curve.png").stat().st_size > 5000
    summary = json.loads((out / "training.json").read_text())
    assert summary["action_space"] == "ee_delta" and summary["camera_slots"] == ["front", "wrist"]
    assert summary["episodes"] == 4 and len(summary["val_episodes"]) == 1 and summary["samples"]["train"] == 24
    model = VLAModel.from_pretrained(out)
    assert model.config.chunk_size == 4 and model.config.action_dim == 7 and model.config.vision.image_size == 32
    stats = NormStats.from_json(out / "norm_stats.json")
    assert stats["action"].dim == 7 and stats["state"].dim == 8
    assert float(np.max(stats["action"].q99 - stats["action"].q01)) > 1e-3  # from the data, not identity
    chunk = _first_frame_chunk(out, src)
    assert chunk.values.shape == (4, 7) and chunk.names[0] == "ee_delta/x"
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(_cfg(tmp_path), sources=[src]).run()


def test_a_run_in_another_space_than_the_embodiments_publishes_chunks_in_that_space(tmp_path):
    # fr3 defaults to ee_delta; a model trained on ee_pose actions must publish ee_pose chunks (its
    # training.json says so), which the controller's adapter turns into reachable joint targets.
    from vla_ros.core.action_spaces import ActionAdapter
    from vla_ros.core.kinematics import RobotKinematics
    from vla_ros.policies.vla.policy import make_vla_policy, trained_action_space

    src = memory_source(n=3, T=8)
    out = train(_cfg(tmp_path, action_space="ee_pose", steps=2, save_every=2, val_every=2), sources=[src]).out
    assert json.loads((out / "training.json").read_text())["action_space"] == "ee_pose"
    assert trained_action_space(out, fr3()) == "ee_pose"
    chunk = _first_frame_chunk(out, src)
    assert chunk.names == action_names(fr3(), "ee_pose") and chunk.values.shape == (4, 8)
    spec = fr3()
    targets = ActionAdapter(spec, RobotKinematics.from_embodiment(spec), "ee_pose").to_joint_targets(
        chunk, np.asarray(src.episode(0).state[0, :7]))
    assert targets.positions.shape == (4, 7)
    # a training.json whose names are not the embodiment's in that space is refused, not misread
    meta = json.loads((out / "training.json").read_text())
    meta["action_names"] = list(reversed(meta["action_names"]))
    (out / "training.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="load it with the embodiment it was trained for"):
        make_vla_policy(fr3(), checkpoint=str(out), device="cpu", warmup=False)


def test_resume_from_a_checkpoint_repeats_the_uninterrupted_losses_exactly(tmp_path):
    src = memory_source(n=4, T=8)
    full = train(_cfg(tmp_path, steps=6, save_every=3), sources=[src])
    losses = _losses(full.out)
    weights = VLAModel.from_pretrained(full.out).state_dict()
    (full.out / "checkpoints" / "step_00000006.pt").unlink()  # as if killed after the step-3 checkpoint
    resumed = train(_cfg(tmp_path, steps=6, save_every=3, resume=True), sources=[src])
    again = _losses(resumed.out)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert again == losses  # bit-identical, steps 4-6 recomputed
    for k, v in VLAModel.from_pretrained(resumed.out).state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_lora_trains_adapters_and_heads_only_and_merges_into_a_plain_model(tmp_path):
    from vla_ros.train.lora import apply_lora, backbone_linear_names, merge_lora

    torch.manual_seed(0)
    from vla_ros.policies.vla.presets import make_config

    model = VLAModel(make_config("default", **TINY))
    names = backbone_linear_names(model)
    assert "model.layers.0.self_attn.q_proj" in names and "model.layers.0.mlp.down_proj" in names
    assert not any(n.endswith("lm_head") for n in names)
    vision_before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    lora = apply_lora(model)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in k for k in trainable) and any(k.startswith("head.") for k in trainable)
    assert not any(k.startswith("vision.") for k in trainable)
    assert not any(k.startswith("backbone.") and "lora_" not in k for k in trainable)
    a = next(m for n, m in model.backbone.named_modules() if n.endswith("q_proj") and hasattr(m, "lora_A"))
    assert a.lora_A["default"].weight.shape[0] == 32 and a.scaling["default"] == pytest.approx(16 / 32)
    from test.policies.vla.vla_helpers import raw_batch
    from vla_ros.policies.vla.training import make_batch, train_step

    images, instructions, states, actions = raw_batch(model, batch=2)
    batch = make_batch(model, images, instructions, actions, states)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        train_step(model, opt, batch, generator=torch.Generator().manual_seed(0))
    for k, v in model.vision.state_dict().items():
        assert torch.equal(v, vision_before[k]), k
    model.eval()
    inputs = batch.inputs
    with torch.no_grad():
        before = model.compute_loss(inputs, batch.actions, torch.Generator().manual_seed(9))
    merge_lora(model, lora)
    assert not any("lora_" in k for k in model.state_dict())
    with torch.no_grad():
        after = model.compute_loss(inputs, batch.actions, torch.Generator().manual_seed(9))
    assert float(after) == pytest.approx(float(before), rel=1e-4)
    model.save_pretrained(tmp_path / "merged")
    loaded = VLAModel.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert float(loaded.compute_loss(inputs, batch.actions, torch.Generator().manual_seed(9))) == pytest.approx(
            float(after), rel=1e-5)


def test_a_lora_run_saves_a_merged_loadable_model(tmp_path):
    result = train(_cfg(tmp_path, lora=True, lora_rank=4, steps=2, save_every=5, val_every=5),
                   sources=[memory_source(n=3, T=6)])
    assert result.summary["lora"] == {"rank": 4, "saved": "merged"}
    assert result.summary["parameters"]["trainable"] == result.summary["parameters"]["total"]  # after merging
    VLAModel.from_pretrained(result.out)


def test_fine_tuning_a_checkpoint_with_lora_saves_merged_and_adapter_forms_that_agree(tmp_path):
    from vla_ros.train.lora import load_adapter

    base = train(_cfg(tmp_path / "a", steps=1, save_every=5, val_every=5), sources=[memory_source(n=3, T=6)]).out
    other = memory_source(n=3, T=6, name="other")
    other._episodes = [dict(e, action=e["action"] * 1.01) for e in other._episodes]  # other data, other stats
    res = train(_cfg(tmp_path / "b", init_from=str(base), config_overrides={}, lora=True, lora_rank=4,
                     lora_save="both", steps=2, lr=1e-2, warmup_steps=0, save_every=5, val_every=5), sources=[other])
    merged = VLAModel.from_pretrained(res.out).state_dict()
    adapted = load_adapter(res.out / "adapter").state_dict()
    start = VLAModel.from_pretrained(base).state_dict()
    assert merged.keys() == adapted.keys()
    for k in merged:
        torch.testing.assert_close(adapted[k], merged[k], atol=1e-6, rtol=1e-5, msg=k)
    assert all(torch.equal(merged[k], start[k]) for k in merged if k.startswith("vision."))  # frozen
    moved = max(float((merged[k] - start[k]).abs().max()) for k in merged if k.startswith("backbone.model.layers"))
    assert moved > 1e-6  # the adapters changed the backbone
    new_stats = NormStats.from_json(res.out / "adapter" / "norm_stats.json")
    old_stats = NormStats.from_json(base / "norm_stats.json")
    assert not np.allclose(new_stats["action"].q99, old_stats["action"].q99)  # the fine-tuning data's
    np.testing.assert_allclose(NormStats.from_json(res.out / "norm_stats.json")["action"].q99, new_stats["action"].q99)
    with pytest.raises(ValueError, match="needs --lora and --from"):
        _cfg(tmp_path / "c", lora=True, lora_save="adapter")


def test_a_foreign_dataset_trains_on_its_own_action_vectors_cameras_and_state(tmp_path):
    from vla_ros.train.data import MemorySource

    rng = np.random.default_rng(0)
    eps = [{"task": "open the drawer", "state": rng.uniform(-1, 1, (6, 2)), "action": rng.uniform(-1, 1, (6, 2)),
            "frames": {"top": rng.integers(0, 255, (6, 24, 24, 3), dtype=np.uint8)}} for _ in range(3)]
    src = MemorySource(eps, 10.0, ["shoulder", "gripper"], ["shoulder", "gripper"], ["top"], name="so100")
    res = train(_cfg(tmp_path, action_space="dataset", steps=1, save_every=5, val_every=5), sources=[src])
    model = VLAModel.from_pretrained(res.out)
    assert model.config.camera_slots == ("top",) and model.config.action_dim == 2 and model.config.state_dim == 2
    assert res.summary["action_names"] == ["shoulder", "gripper"]
