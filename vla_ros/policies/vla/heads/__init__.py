"""The three action heads; `build_head` picks one by `HeadConfig.kind`."""

from __future__ import annotations

from torch import nn

from vla_ros.policies.vla.config import VLAConfig


def build_head(config: VLAConfig) -> nn.Module:
    kind = config.head.kind
    if kind == "discrete":
        from vla_ros.policies.vla.heads.discrete import DiscreteActionHead

        return DiscreteActionHead(config)
    if kind == "diffusion":
        from vla_ros.policies.vla.heads.diffusion import DiffusionActionHead

        return DiffusionActionHead(config)
    if kind == "flow":
        from vla_ros.policies.vla.heads.flow import FlowActionHead

        return FlowActionHead(config)
    raise ValueError(f"unknown head kind {kind!r}; valid kinds: discrete, diffusion, flow")
