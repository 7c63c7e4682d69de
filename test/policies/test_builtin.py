"""The built-in policy: the preset overrides its training recipe uses, and the shipped checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.policies.vla.config import ConvConfig, VLAConfig
from vla_ros.policies.vla.presets import make_config

# The vision override of scripts/train_builtin.sh, as `vla-ros train --config` parses it from JSON.
BUILTIN_VISION = {"kind": "conv_film", "image_size": 64, "siglip": None,
                  "conv": {"channels": [32, 64, 64], "num_tokens": 8, "coords": True}}


def test_make_config_builds_nested_sub_configs_from_dicts():
    # A JSON override names the nested conv / ViT config as a plain dict: it must become the dataclass
    # (it used to stay a dict and the FiLM encoder failed with "'dict' object has no attribute 'channels'").
    cfg = make_config("default", vision=BUILTIN_VISION)
    assert isinstance(cfg.vision.conv, ConvConfig)
    assert cfg.vision.conv.channels == (32, 64, 64) and cfg.vision.conv.num_tokens == 8 and cfg.vision.conv.coords
    assert cfg.vision.siglip is None and cfg.vision.image_size == 64
    assert VLAConfig.from_dict(cfg.to_dict()) == cfg
    vit = make_config("default", vision={"siglip": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                                    "intermediate_size": 64, "patch_size": 8}, "image_size": 64})
    assert vit.vision.siglip.hidden_size == 32 and vit.vision.siglip.patch_size == 8
    with pytest.raises(TypeError):
        make_config("default", vision={"kind": "conv_film", "siglip": None, "conv": {"chanels": [8]}})


def test_builtin_vision_override_builds_a_model():
    from vla_ros.policies.vla.model import VLAModel

    cfg = make_config("default", vision=BUILTIN_VISION, action_dim=7, camera_slots=("front", "wrist"),
                      state_dim=8, chunk_size=10)
    model = VLAModel(cfg)
    assert model.config.vision.conv.channels == (32, 64, 64) and model.vision.out_dim == 66
    assert np.isfinite(sum(float(p.sum()) for p in model.parameters()))


# ---------------------------------------------------------------------------- the shipped checkpoint
def _shipped_embodiments() -> list[str]:
    from vla_ros.policies.builtin import shipped_embodiments

    return shipped_embodiments()


SHIPPED = _shipped_embodiments()


def _shipped(embodiment: str):
    from vla_ros.policies.builtin import BUILTIN_DIR

    return BUILTIN_DIR / embodiment


def test_fr3_ships_a_builtin_checkpoint():
    assert "fr3" in SHIPPED  # make demo's default policy


def _reference_observation(ref: dict):
    from vla_ros.core.types import Observation

    # builtin.json's own record of the observation (the first FR3 checkpoint's had no joint_names)
    names = tuple(ref.get("joint_names") or [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1"])
    images = {s: np.full((224, 224, 3), ref["image_value"], np.uint8) for s in ("front", "wrist")}
    return Observation(stamp_s=0.0, images=images, joint_names=names,
                       joint_positions=np.asarray(ref["joint_positions"], np.float64), instruction=ref["instruction"])


@pytest.mark.parametrize("embodiment", SHIPPED)
def test_shipped_checkpoint_size_and_metadata(embodiment):
    import json

    folder = _shipped(embodiment)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 30 * 1024 * 1024, f"{folder} holds {size / 2**20:.1f} MB > 30 MB"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "norm_stats.json", "training.json", "builtin.json"):
        assert (folder / f).is_file(), f
    meta = json.loads((folder / "builtin.json").read_text())
    training = json.loads((folder / "training.json").read_text())
    ds = meta["dataset"]
    assert ds["policy"] == "scripted" and ds["episodes"] >= 20 and ds["frames"] > 20 * ds["episodes"]
    assert ds["tasks"] == ["pick up the blue cube", "pick up the green cube", "pick up the red cube"]
    # the recording seeds never overlap the evaluation seeds (vla-ros eval's default 90001...)
    assert ds["record_seeds"] and max(ds["record_seeds"]) < 90001
    assert meta["training"]["steps"] == training["steps"] >= 500
    assert meta["embodiment"] == training["embodiment"] == embodiment and training["action_space"] == "ee_pose"  # absolute tool poses
    assert training["camera_slots"] == ["front", "wrist"]
    assert meta["eval"]["episodes"] >= 10 and 0.0 <= meta["eval"]["success_rate"] <= 1.0


@pytest.mark.parametrize("embodiment", SHIPPED)
def test_shipped_checkpoint_loads_offline_and_reproduces_its_reference_chunk(monkeypatch, embodiment):
    import json

    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.base import make_policy

    folder = _shipped(embodiment)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = json.loads((folder / "builtin.json").read_text())["reference"]
    policy = make_policy("builtin", embodiment=embodiment, warmup=False)
    assert policy.model.config.chunk_size == 10 and policy.model.config.vision.kind == "conv_film"
    obs = _reference_observation(ref)
    policy.reset()
    chunk = policy.infer(obs)
    # ee_pose chunks: the tool position, its orientation quaternion and the gripper
    spec = load_embodiment(embodiment)
    assert list(chunk.names) == ref["names"] == list(action_names(spec, "ee_pose"))
    # per arm: the tool position (3), its orientation quaternion (4) and the gripper (1)
    assert chunk.values.shape == (10, 8 * len(spec.arms))
    np.testing.assert_allclose(chunk.values, np.asarray(ref["chunk"]), atol=1e-4)
    policy.reset()
    np.testing.assert_array_equal(policy.infer(obs).values, chunk.values)  # deterministic after reset
    # the instruction reaches the actions: asking for another cube changes the chunk
    other = _reference_observation({**ref, "instruction": "pick up the blue cube"})
    policy.reset()
    assert np.abs(policy.infer(other).values - chunk.values).max() > 1e-4


def test_builtin_policy_names_the_missing_embodiment():
    from vla_ros.policies.builtin import builtin_checkpoint

    with pytest.raises(FileNotFoundError, match="no built-in checkpoint for embodiment 'aloha'"):
        builtin_checkpoint("aloha")


def test_builtin_is_default_only_with_a_measured_success_rate_at_the_bar(tmp_path, monkeypatch):
    from vla_ros.policies import builtin

    monkeypatch.setattr(builtin, "BUILTIN_DIR", tmp_path)
    assert not builtin.builtin_is_default("fr3")  # nothing shipped
    (tmp_path / "fr3").mkdir()
    (tmp_path / "fr3" / "config.json").write_text("{}")
    assert not builtin.builtin_is_default("fr3")  # shipped without a measurement
    for rate, expected in ((0.0, False), (0.49, False), (0.5, True), (0.86, True)):
        (tmp_path / "fr3" / "builtin.json").write_text(f'{{"eval": {{"success_rate": {rate}}}}}')
        assert builtin.builtin_is_default("fr3") is expected, rate
    (tmp_path / "fr3" / "builtin.json").write_text("not json")
    assert not builtin.builtin_is_default("fr3")


def test_a_bare_launch_on_a_real_arm_never_defaults_to_the_simulation_trained_policy(tmp_path, monkeypatch):
    from vla_ros.policies import builtin

    monkeypatch.setattr(builtin, "BUILTIN_DIR", tmp_path)
    (tmp_path / "fr3").mkdir()
    (tmp_path / "fr3" / "config.json").write_text("{}")
    (tmp_path / "fr3" / "builtin.json").write_text('{"eval": {"success_rate": 0.9}}')
    assert builtin.default_policy("fr3", sim=True) == "builtin"
    assert builtin.default_policy("fr3", "/a/ckpt", sim=False) == "vla"
    with pytest.raises(ValueError, match=r"no policy named and no checkpoint given for the real 'fr3'.*policy:=builtin"):
        builtin.default_policy("fr3", sim=False)
