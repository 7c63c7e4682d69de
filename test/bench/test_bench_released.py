"""`vla-ros bench released`: the released-size architectures match the published model sizes,
and the benchmark's code path runs end to end (at fixture size on the CPU)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from vla_ros.bench import released


def _meta(factory):
    with torch.device("meta"):
        return factory()


def test_released_openvla_architecture_has_openvla_7b_parameter_count():
    from vla_ros.policies.checkpoints.openvla import OpenVLAModel

    arch = released.openvla_arch("released")
    # openvla/openvla-7b on Hugging Face: 7.54B parameters in its safetensors.
    in_checkpoint = sum(int(np.prod(shape)) for shape in arch.expected_shapes().values())
    assert in_checkpoint == pytest.approx(7.54e9, rel=1e-3)
    model = _meta(lambda: OpenVLAModel(arch, 32000, 256))
    # Ours adds DINOv2's (unused) mask token and the class row of its position table.
    assert sum(p.numel() for p in model.parameters()) - in_checkpoint == 2 * arch.dino.dim
    assert arch.dino.num_patches == arch.siglip.num_patches == 256  # 224 px / 14 px patches


def test_released_pi0_architecture_is_paligemma_3b_plus_a_300m_expert():
    from transformers import PI0ForConditionalGeneration

    model = _meta(lambda: PI0ForConditionalGeneration(released.pi0_config("released")))
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in model.model.named_children()}
    assert count["vlm"] == pytest.approx(2.92e9, rel=2e-3)  # google/paligemma-3b-pt-224: 2.92B
    expert_layers = sum(p.numel() for p in model.model.dit.layers.parameters())
    assert expert_layers == pytest.approx(0.31e9, rel=0.02)  # π0 paper: a ~300M action expert
    assert model.config.chunk_size == 50 and model.config.num_inference_steps == 10


def test_tiny_run_times_every_part_and_returns_finite_actions():
    args = argparse.Namespace(models="openvla,pi0", size="tiny", device="cpu", dtype=None, iterations=2)
    result = released.run(args)
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    ov, pi = result["models"]["openvla"], result["models"]["pi0"]
    assert ov["action_tokens"] == 7 and ov["action_finite"]
    assert ov["image_tokens"] == 4  # 28 px / 14 px patches, squared
    assert ov["cuda_graphs"] is False
    for part in ("predict_action", "predict_action_eager", "vision_projector", "prefill_with_vision"):
        assert 0 < ov[part]["p50_ms"] <= ov[part]["p99_ms"]
    assert ov["hz"] == pytest.approx(1e3 / ov["predict_action"]["p50_ms"], rel=0.01)
    assert pi["chunk"] == [50, 14] and pi["actions_finite"] and pi["cameras"] == 3
    assert pi["cuda_graphs"] is False  # CUDA only
    assert 0 < pi["sample_actions_eager"]["p50_ms"] <= pi["sample_actions_eager"]["p99_ms"]
    # A 10-step chunk costs more than a 1-step chunk: the expert runs once per Euler step.
    assert pi["sample_actions"]["p50_ms"] > pi["sample_actions_1_step"]["p50_ms"]


def test_released_size_refuses_a_cpu():
    args = argparse.Namespace(models="pi0", size="released", device="cpu", dtype=None, iterations=1)
    with pytest.raises(ValueError, match="needs an accelerator"):
        released.run(args)


def test_unknown_model_is_refused_with_the_valid_names():
    args = argparse.Namespace(models="octo", size="tiny", device="cpu", dtype=None, iterations=1)
    with pytest.raises(ValueError, match="openvla, pi0"):
        released.run(args)
