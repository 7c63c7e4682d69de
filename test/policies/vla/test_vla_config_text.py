"""VLAConfig validation and JSON round trip, presets, and the offline instruction tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.policies.vla.config import (
    BackboneConfig,
    HeadConfig,
    TextConfig,
    ViTConfig,
    VisionConfig,
    VLAConfig,
)
from vla_ros.policies.vla.presets import OPENVLA_PROMPT, PRESETS, make_config
from vla_ros.policies.vla.text import BOS_ID, PAD_ID, InstructionTokenizer, builtin_corpus


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_json_round_trip(preset):
    cfg = make_config(preset)
    assert VLAConfig.from_dict(cfg.to_dict()) == cfg


def test_preset_structures():
    kinds = {name: (make_config(name).vision.kind, make_config(name).backbone.kind, make_config(name).head.kind)
             for name in PRESETS}
    assert kinds == {
        "default": ("siglip", "llama", "flow"),
        "rt1": ("conv_film", "llama", "discrete"),
        "openvla": ("dinosiglip", "llama", "discrete"),
        "octo": ("siglip", "llama", "diffusion"),
        "pi0": ("siglip", "gemma", "flow"),
    }
    octo = make_config("octo")
    assert (octo.chunk_size, octo.head.diffusion_steps, octo.head.sampler) == (4, 20, "ddpm")
    assert make_config("openvla").text.prompt == OPENVLA_PROMPT
    assert make_config("rt1").head.parallel and not make_config("openvla").head.parallel


def test_bad_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match=r"HeadConfig.kind is 'unet'; valid values: discrete, diffusion, flow"):
        HeadConfig(kind="unet")
    with pytest.raises(ValueError, match=r"BackboneConfig.num_heads 6 is not a multiple of num_kv_heads 4"):
        BackboneConfig(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match=r"image_size 100 is not a multiple of patch_size 16"):
        VisionConfig(kind="siglip", image_size=100, siglip=ViTConfig())
    with pytest.raises(ValueError, match=r"kind 'dinosiglip' needs the 'dino' sub-config"):
        VisionConfig(kind="dinosiglip", siglip=ViTConfig())
    with pytest.raises(ValueError, match=r"discrete head needs a bounded action_norm"):
        make_config("openvla", action_norm="mean_std")
    with pytest.raises(ValueError, match=r"HeadConfig.ddim_steps 30 exceeds diffusion_steps 20"):
        HeadConfig(kind="diffusion", ddim_steps=30)
    with pytest.raises(ValueError, match=r"prompt must contain"):
        TextConfig(prompt="no placeholder")


def test_make_config_refuses_unknown_names():
    with pytest.raises(KeyError, match=r"unknown VLA preset 'rt2'; valid presets: default, rt1, openvla, octo, pi0"):
        make_config("rt2")
    with pytest.raises(ValueError, match=r"unknown VLAConfig override\(s\) \['chunk'\]"):
        make_config("default", chunk=4)
    with pytest.raises(ValueError, match=r"unknown head field\(s\) \['steps'\]"):
        make_config("default", head={"steps": 4})
    assert make_config("default", head={"kind": "diffusion"}).head.kind == "diffusion"


def test_from_dict_names_unknown_keys_and_format():
    d = make_config("default").to_dict()
    d["vision"]["siglip"]["depth"] = 3
    with pytest.raises(ValueError, match=r"vision.siglip: unknown key\(s\) \['depth'\]"):
        VLAConfig.from_dict(d)
    d = make_config("default").to_dict()
    d["format"] = "other/1"
    with pytest.raises(ValueError, match=r"'format' is 'other/1'"):
        VLAConfig.from_dict(d)


# ---- tokenizer ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return InstructionTokenizer.build(TextConfig(max_tokens=12))


def test_tokenizer_encodes_with_bos_padding_and_mask(tok):
    enc = tok.encode(["pick up the red cube", "open the drawer"])
    assert enc.input_ids.shape == enc.attention_mask.shape
    assert (enc.input_ids[:, 0] == BOS_ID).all()
    n0, n1 = enc.attention_mask.sum(1)
    assert n0 > n1
    assert (enc.input_ids[1, n1:] == PAD_ID).all() and not enc.attention_mask[1, n1:].any()
    # corpus phrases are merged into few tokens; unseen text falls back to bytes and still round-trips
    assert n0 <= 7
    wide = InstructionTokenizer(tok.tokenizer, TextConfig(max_tokens=64))
    for text in ["Pick up the red cube", "zap the ünïcode ✓ 42"]:
        ids = wide.encode([text]).input_ids[0]
        assert wide.decode(list(ids)).strip() == text.lower()


def test_tokenizer_truncates_and_is_deterministic(tmp_path, tok):
    long = " ".join(["stack the green block on the plate"] * 10)
    enc = tok.encode([long])
    assert enc.input_ids.shape == (1, 12) and enc.attention_mask.all()
    again = InstructionTokenizer.build(TextConfig(max_tokens=12))
    assert np.array_equal(again.encode([long]).input_ids, enc.input_ids)
    tok.save(tmp_path)
    loaded = InstructionTokenizer.load(tmp_path, tok.config)
    assert np.array_equal(loaded.encode(["pour the cup"]).input_ids, tok.encode(["pour the cup"]).input_ids)
    with pytest.raises(TypeError, match="list of instructions"):
        tok.encode("a single string")


def test_tokenizer_refuses_a_vocabulary_that_reaches_the_action_tokens(tok):
    assert tok.vocab_size < 512 and len(builtin_corpus()) > 1000
    tok.check_vocab(768)
    with pytest.raises(ValueError, match=r"leaves only 144 below the 256 action tokens"):
        tok.check_vocab(400)
