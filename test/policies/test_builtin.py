"""The built-in policy: the preset overrides its training recipe uses, and the shipped checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.policies.vla.config import ConvConfig, VLAConfig
from vla_ros.policies.vla.presets import make_config

# The vision override of scripts/train_builtin.sh, as `vla-ros train --config` parses it from JSON.
BUILTIN_VISION = {"kind": "conv_film", "image_size": 64, "siglip": None,
                  "conv": {"channels": [16, 32, 64], "num_tokens": 8}}


def test_make_config_builds_nested_sub_configs_from_dicts():
    # A JSON override names the nested conv / ViT config as a plain dict: it must become the dataclass
    # (it used to stay a dict and the FiLM encoder failed with "'dict' object has no attribute 'channels'").
    cfg = make_config("default", vision=BUILTIN_VISION)
    assert isinstance(cfg.vision.conv, ConvConfig)
    assert cfg.vision.conv.channels == (16, 32, 64) and cfg.vision.conv.num_tokens == 8
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
    assert model.config.vision.conv.channels == (16, 32, 64)
    assert np.isfinite(sum(float(p.sum()) for p in model.parameters()))
