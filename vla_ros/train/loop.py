"""The training loop: model, data, optimiser, checkpoints with exact resume, validation, metrics,
data parallelism.

Determinism. Every random draw of step s (which samples, their augmentation, the head's noise
and time draws, dropout) comes from generators seeded by (seed, s[, rank]); the sample order is a
seeded permutation per epoch of the training samples. A checkpoint therefore only needs the
model, the optimiser state and s: a run resumed after a kill continues with bit-identical losses.

Data parallelism. Under `torchrun --nproc_per_node K` (WORLD_SIZE > 1) each process joins a
process group (gloo on the CPU, nccl on GPUs), takes its slice of every global batch
(`batch_size` is global and must divide by K), augments it with its slice of the global batch's
augmentation parameters, and DistributedDataParallel averages the gradients. With a head whose
loss draws no noise (discrete) the parameters after each step equal a single process's on the
same global batch (tested); the flow / diffusion heads draw their noise per process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.policy import TRAINING_FILE, state_names
from vla_ros.policies.vla.presets import make_config
from vla_ros.policies.vla.training import LossModule, inputs_from_pixels
from vla_ros.train.augment import (
    CHANNEL_PERMUTATIONS, AugmentConfig, augment, permute_colours, sample_params, slice_params,
)
from vla_ros.train.data import RAW_SPACE, ChunkConverter, DatasetSource, TrainingDataError, build_training_set

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
TRAINING_FORMAT = "vla_ros.training/1"
SCHEDULES = ("cosine", "constant")
LORA_SAVES = ("merged", "adapter", "both")
ADAPTER_DIR = "adapter"


# The goal's normalisation spread is at least this (m): the goals of a task that grasps at one height
# vary by millimetres in z, and dividing by that would make a millimetre's error a unit of loss.
GOAL_STD_FLOOR_M = 0.01


def goal_normalisation(goals: np.ndarray, noise_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, noise) of the training goals (N, 3) in metres: the goal is normalised as
    (g - mean) / std, std at least GOAL_STD_FLOOR_M; `noise` is `noise_m` in those units per axis, 0 on
    an axis the goals do not vary on (std below the floor: all grasps at table height) -- there is
    nothing to be robust about there, and noise would be all the condition says on that axis."""
    spread = goals.std(0)
    std = np.maximum(spread, GOAL_STD_FLOOR_M)
    return goals.mean(0), std, np.where(spread >= GOAL_STD_FLOOR_M, noise_m / std, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...]
    out: str
    embodiment: str | None = None  # None: the dataset's robot_type
    preset: str = "default"
    init_from: str | None = None  # a save_pretrained folder to fine-tune
    action_space: str | None = None  # None: the embodiment's
    chunk_size: int | None = None
    config_overrides: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 16  # global
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 0
    augment: bool = True
    lora: bool = False
    lora_rank: int = 32
    lora_save: str = "merged"  # merged | adapter | both (adapter needs init_from: the base it adapts)
    save_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 100
    val_episodes: int | None = None
    val_fraction: float = 0.1
    val_samples: int = 64
    min_episode_frames: int = 1  # shorter episodes (recordings cut short) are left out
    max_episodes: int | None = None  # use only the first N episodes kept (learning curves)
    # Leave out the frames leading to a grasp the episode lets go of again (an approach that missed:
    # `data.missed_grasp_frames`); what follows it, the recovery, stays.
    skip_missed_grasps: bool = False
    # The first early_frames frames of every episode are drawn early_weight times per epoch: there
    # the policy must choose its target from the image and the instruction alone; later frames
    # also show it in the arm's own position, and dominate a uniform draw.
    early_frames: int = 0
    early_weight: int = 1
    goal_weight: float = 1.0  # weight of the goal head's loss (models with config goal_head only)
    # Standard deviation (m, per axis) of the noise added to the demonstration's goal the flow head is
    # conditioned on in training (models with config goal_condition only): about the goal head's own
    # error on unseen scenes, so that the head learns to correct it from the image.
    goal_noise_m: float = 0.0
    # Colour-permutation augmentation (`augment.permute_colours`): each sample's RGB channels in a
    # random order and its instruction's colour words renamed to match. For tasks naming objects by colour.
    colour_permutation: bool = False
    cache_dir: str | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        for name in ("steps", "batch_size", "save_every", "val_every", "val_samples", "keep_checkpoints",
                     "min_episode_frames", "early_weight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (self.goal_weight >= 0 and math.isfinite(self.goal_weight)):
            raise ValueError(f"goal_weight must be a finite number >= 0, got {self.goal_weight}")
        if not (self.goal_noise_m >= 0 and math.isfinite(self.goal_noise_m)):
            raise ValueError(f"goal_noise_m must be a finite number >= 0, got {self.goal_noise_m}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes must be >= 1, got {self.max_episodes}")
        if self.early_frames < 0:
            raise ValueError(f"early_frames must be >= 0, got {self.early_frames}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lora_save not in LORA_SAVES:
            raise ValueError(f"lora_save must be one of {LORA_SAVES}, got {self.lora_save!r}")
        if self.lora_save != "merged" and not (self.lora and self.init_from):
            raise ValueError("an adapter-only save needs --lora and --from (the base checkpoint the adapter is for)")
        if self.init_from and (self.chunk_size is not None or self.config_overrides):
            raise ValueError("chunk_size / config overrides cannot be changed when fine-tuning a checkpoint (its "
                             "config.json defines the model)")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    val_loss: float | None
    samples_per_s: float
    summary: dict


def seed_of(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) % (2 ** 32) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to 0 at cfg.steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step - cfg.warmup_steps, span) / span))


def weighted_ids(ids: np.ndarray, frame_in_episode: np.ndarray, early_frames: int, weight: int) -> np.ndarray:
    """`ids` with every sample among the first `early_frames` of its episode repeated `weight` times
    (in place: the order of the ids is kept, so a seeded permutation of them stays reproducible)."""
    ids = np.asarray(ids, dtype=np.int64)
    if early_frames <= 0 or weight <= 1:
        return ids
    counts = np.where(np.asarray(frame_in_episode)[ids] < early_frames, weight, 1)
    return np.repeat(ids, counts)


class BatchOrder:
    """The sample ids of global batch `step`: epochs of seeded permutations, concatenated."""

    def __init__(self, ids: np.ndarray, batch_size: int, seed: int) -> None:
        if len(ids) == 0:
            raise TrainingDataError("no training samples (every episode is held out?)")
        self.ids = np.asarray(ids)
        self.batch_size = batch_size
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:  # a batch spans at most two epochs (unless tiny data)
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, 11, epoch]).permutation(len(self.ids))
        return self._perms[epoch]

    def batch(self, step: int) -> np.ndarray:
        n = len(self.ids)
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for i, p in enumerate(pos):
            out[i] = self.ids[self._perm(int(p // n))[p % n]]
        return out

    def epoch(self, step: int) -> float:
        return step * self.batch_size / len(self.ids)


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world


def _init_dist() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vla_ros" / "frames"


def _build_model(cfg: TrainConfig, spec, converter: ChunkConverter, slots: Sequence[str], state_dim: int
                 ) -> VLAModel:
    if cfg.init_from:
        model = VLAModel.from_pretrained(cfg.init_from)
        mc = model.config
        if mc.action_dim != converter.action_dim:
            raise TrainingDataError(f"{cfg.init_from} predicts {mc.action_dim}-D actions; the data gives "
                                    f"{converter.action_dim}-D {converter.space} actions {list(converter.names)}")
        if mc.state_dim not in (0, state_dim):
            raise TrainingDataError(f"{cfg.init_from} takes a {mc.state_dim}-D state; the data's is {state_dim}-D")
        return model
    base = make_config(cfg.preset)
    sized: dict[str, Any] = {"action_dim": converter.action_dim, "camera_slots": tuple(slots),
                             "state_dim": state_dim if base.state_dim else 0}
    if cfg.chunk_size is not None:
        sized["chunk_size"] = cfg.chunk_size
    sized.update(cfg.config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return VLAModel(make_config(cfg.preset, **sized))


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / CHECKPOINT_DIR).glob("step_*.pt"))


def _plot_curve(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        s, v = zip(*train)
        ax.plot(s, v, color="tab:blue", alpha=0.35, lw=0.8, label="train (per step)")
        k = max(1, len(v) // 50)
        if k > 1:
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1:], smooth, color="tab:blue", lw=1.5, label=f"train (mean of {k})")
    if val:
        s, v = zip(*val)
        ax.plot(s, v, "o-", color="tab:orange", label="validation (held-out episodes)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if train and min(v for _, v in train) > 0:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class Trainer:
    """One training run (see the module docstring); `run()` trains and saves."""

    def __init__(self, cfg: TrainConfig, sources: Sequence | None = None) -> None:
        self.cfg = cfg
        self.dist = _init_dist()
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"batch_size {cfg.batch_size} (global) must divide by the {self.dist.world} processes")
        self.local_batch = cfg.batch_size // self.dist.world
        self.out = Path(cfg.out)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        if sources is None:
            if not cfg.data:
                raise ValueError("no datasets given (--data DIR ...)")
            sources = [DatasetSource(d) for d in cfg.data]
        self.sources = list(sources)
        emb = cfg.embodiment or self.sources[0].robot_type
        if not emb:
            raise TrainingDataError(f"{self.sources[0].name} names no robot_type; pass --embodiment")
        self.spec = load_embodiment(emb)
        space = cfg.action_space or self.spec.action_space
        self.converter = ChunkConverter(self.spec, space, self.sources[0].action_names)
        if space != RAW_SPACE and space != self.spec.action_space:
            log.info("training in %s (embodiment '%s' defaults to %s): the checkpoint says so in %s and the vla "
                     "policy publishes %s chunks", space, self.spec.name, self.spec.action_space, TRAINING_FILE, space)
        slots = [c.slot for c in self.spec.cameras if c.slot in self.sources[0].camera_slots]
        state_dim = len(state_names(self.spec))
        if space == RAW_SPACE:
            # A foreign dataset (e.g. LeRobot's own): its cameras and state as they are.
            slots = slots or list(self.sources[0].camera_slots)
            state_dim = len(self.sources[0].state_names) or self.sources[0].episode(0).state.shape[1]
        if not slots:
            raise TrainingDataError(f"{self.sources[0].name} records cameras {list(self.sources[0].camera_slots)}, "
                                    f"none of embodiment '{self.spec.name}''s {[c.slot for c in self.spec.cameras]}")
        self.model = _build_model(cfg, self.spec, self.converter, slots, state_dim)
        mc = self.model.config
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        t0 = time.monotonic()
        build = lambda: build_training_set(  # noqa: E731
            self.sources, self.converter, self.spec.policy_period_s, mc.chunk_size, mc.camera_slots,
            mc.vision.image_size, cache, cfg.val_fraction, cfg.val_episodes, cfg.seed,
            state_dim=mc.state_dim or None, log_fn=self._say, min_episode_frames=cfg.min_episode_frames,
            goals=mc.goal_head, max_episodes=cfg.max_episodes, skip_missed_grasps=cfg.skip_missed_grasps)
        if self.dist.main:  # one process fills the frame cache, the others read it
            self.data = build()
        self.dist.barrier()
        if not self.dist.main:
            self.data = build()
        self.data_s = time.monotonic() - t0
        self.model.norm_stats = self.data.norm_stats()
        self.model._check_norm_stats(self.model.norm_stats, "statistics computed from the data")
        self.goal_stats = None
        if mc.goal_head:
            # Normalised by the training episodes' goals (held-out ones never leak in).
            known = self.data.goals[self.data.train_index]
            known = known[np.all(np.isfinite(known), axis=1)]
            if not len(known):
                raise TrainingDataError("the model has a goal head but no training episode grasps (its gripper is "
                                        "never commanded to close after being open): nothing to predict")
            mean, std, noise = goal_normalisation(known, cfg.goal_noise_m)
            self.goal_stats = (mean, std)
        self.goal_noise = None
        if cfg.goal_noise_m > 0:
            if not mc.goal_condition:
                raise ValueError("goal_noise_m is the noise on the goal the flow head is conditioned on: the model "
                                 "needs config goal_condition")
            self.goal_noise = torch.from_numpy(noise).float()
        self.lora = None
        if cfg.lora:
            from vla_ros.train.lora import LoRASettings, apply_lora

            self.lora = apply_lora(self.model, LoRASettings(rank=cfg.lora_rank))
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.order = BatchOrder(weighted_ids(self.data.train_index, self.data.frame_in_episode(), cfg.early_frames,
                                             cfg.early_weight), cfg.batch_size, cfg.seed)
        self.augment_cfg = AugmentConfig() if cfg.augment else None
        self.start_step = 0
        self.records: list[dict] = []
        self.module: torch.nn.Module = LossModule(self.model)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    # ------------------------------------------------------------------ helpers
    def _say(self, text: str) -> None:
        if self.dist.main:
            log.info(text)

    def _batch(self, ids: np.ndarray, params: dict | None, perms: np.ndarray | None = None):
        d = self.data
        mc = self.model.config
        size = mc.vision.image_size
        pix = torch.from_numpy(d.pixels(ids))  # (b, C, S, S, 3) uint8
        b, c = pix.shape[:2]
        x = pix.permute(0, 1, 4, 2, 3).reshape(b * c, 3, size, size).to(torch.float32) / 255.0
        if params is not None:
            x = augment(x, params)
        x = x.reshape(b, c, 3, size, size)
        instructions = [d.tasks[i] for i in d.sample_task[ids]]
        if perms is not None:
            x, instructions = permute_colours(x, instructions, perms)
        states = d.states[ids] if mc.state_dim else None
        inputs = inputs_from_pixels(self.model, x, instructions, states)
        actions = self.model.normalize_actions(d.actions[ids].astype(np.float64))
        goals = None
        if self.goal_stats is not None:
            mean, std = self.goal_stats
            goals = torch.from_numpy((d.goals[ids] - mean) / std).to(device=self.device, dtype=torch.float32)
        return inputs, actions, goals

    def _step_params(self, step: int) -> dict | None:
        if self.augment_cfg is None:
            return None
        cams = len(self.model.config.camera_slots)
        g = torch.Generator().manual_seed(seed_of(self.cfg.seed, step, 1))
        params = sample_params(self.augment_cfg, self.cfg.batch_size * cams, g)
        lo = self.dist.rank * self.local_batch * cams
        return slice_params(params, lo, lo + self.local_batch * cams)

    def validation_loss(self) -> float | None:
        d = self.data
        if len(d.val_index) == 0:
            return None
        rng = np.random.default_rng([self.cfg.seed, 13])
        ids = np.sort(rng.permutation(d.val_index)[: self.cfg.val_samples])
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for k, i in enumerate(range(0, len(ids), self.local_batch)):
                chunk = ids[i:i + self.local_batch]
                inputs, actions, _ = self._batch(chunk, None)  # the action loss alone: runs compare
                g = torch.Generator(device=self.device).manual_seed(seed_of(self.cfg.seed, 2 ** 31 - 1, k))
                total += float(self.model.compute_loss(inputs, actions, g)) * len(chunk)
                count += len(chunk)
        self.model.train()
        return total / count

    def _write_metrics(self, record: dict) -> None:
        self.records.append(record)
        if self.dist.main:
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self._tb is not None:
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)):
                        self._tb.add_scalar(k, v, record["step"])

    def save_checkpoint(self, step: int) -> Path:
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{step:08d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "config": dataclasses.asdict(self.cfg), "norm_stats": self.model.norm_stats.to_json()}, tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact
        for old in _checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def _resume(self) -> None:
        found = _checkpoints(self.out)
        if not found:
            self._say(f"--resume: no checkpoint in {self.out / CHECKPOINT_DIR}; starting from step 0")
            return
        state = torch.load(found[-1], map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_step = int(state["step"])
        metrics = self.out / METRICS_FILE
        kept = []
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by the kill
                if r.get("step", 0) <= self.start_step:
                    kept.append(r)
        self.records = kept
        if self.dist.main:
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._say(f"resumed from {found[-1]} at step {self.start_step}")

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        existing = _checkpoints(self.out)
        if existing and not cfg.resume:
            raise FileExistsError(f"{self.out} already holds checkpoints ({existing[-1].name}); pass --resume to "
                                  "continue that run or choose a new --out")
        if not cfg.resume and self.dist.main:
            (self.out / METRICS_FILE).unlink(missing_ok=True)
        self.dist.barrier()
        if cfg.resume:
            self._resume()
        self._tb = None
        if self.dist.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                pass
        bar = None
        if cfg.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.start_step, desc="train", unit="step", dynamic_ncols=True)
        self.model.train()
        t_start = time.monotonic()
        # The next step's batch (frames, augmentation, tokens) is assembled on a worker thread
        # while this step computes; its content depends on the step number only.
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train_data")
        pending = pool.submit(self._prepare, self.start_step) if self.start_step < cfg.steps else None
        try:
            return self._loop(pool, pending, bar, t_start)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, step: int):
        lo, hi = self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch
        ids = self.order.batch(step)[lo:hi]
        perms = None
        if self.cfg.colour_permutation:  # drawn for the global batch: a rank's slice is what one process draws
            perms = np.random.default_rng([self.cfg.seed, step, 5]).integers(
                0, len(CHANNEL_PERMUTATIONS), self.cfg.batch_size)[lo:hi]
        return self._batch(ids, self._step_params(step), perms)

    def _loop(self, pool, pending, bar, t_start: float) -> TrainResult:
        cfg = self.cfg
        done_samples = 0
        loss_value = float("nan")
        val = None
        for step in range(self.start_step, cfg.steps):
            lr = lr_at(step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(seed_of(cfg.seed, step, 3, self.dist.rank))  # dropout, if any
            inputs, actions, goals = pending.result()
            if step + 1 < cfg.steps:
                pending = pool.submit(self._prepare, step + 1)
            g = torch.Generator(device=self.device).manual_seed(seed_of(cfg.seed, step, 2, self.dist.rank))
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                loss = self.module(inputs, actions, g, goals, cfg.goal_weight, self.goal_noise)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step + 1}: training loss is {float(loss)}; lower --lr")
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                               cfg.max_grad_norm)
            self.optimizer.step()
            loss_value = self.dist.mean(float(loss.detach()))
            done_samples += cfg.batch_size
            elapsed = time.monotonic() - t_start
            rate = done_samples / elapsed if elapsed > 0 else float("nan")
            record = {"step": step + 1, "loss": loss_value, "lr": lr,
                      "epoch": round(self.order.epoch(step + 1), 4), "samples_per_s": round(rate, 2)}
            if goals is not None and self.model.last_goal_loss is not None:
                record["goal_loss"] = self.model.last_goal_loss  # this process's batch
            self._write_metrics(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
            last = step + 1 == cfg.steps
            if self.dist.main and ((step + 1) % cfg.val_every == 0 or last):
                val = self.validation_loss()
                if val is not None:
                    self._write_metrics({"step": step + 1, "val_loss": val})
            if (step + 1) % cfg.save_every == 0 and not last:
                if self.dist.main:
                    self.save_checkpoint(step + 1)
                    _plot_curve(self.records, self.out / CURVE_FILE)
                self.dist.barrier()
        if bar is not None:
            bar.close()
        train_s = time.monotonic() - t_start
        result = self._finish(loss_value, val, done_samples / train_s if train_s > 0 else float("nan"), train_s)
        if self._tb is not None:
            self._tb.close()
        return result

    def _finish(self, loss: float, val: float | None, rate: float, train_s: float) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.save_checkpoint(cfg.steps)
        summary = {}
        if self.dist.main:
            model = self.model
            if self.lora is not None:
                from vla_ros.train.lora import LoRASettings, merge_lora, save_adapter

                if cfg.lora_save in ("adapter", "both"):
                    save_adapter(model, LoRASettings(rank=cfg.lora_rank), cfg.init_from,
                                 self.out if cfg.lora_save == "adapter" else self.out / ADAPTER_DIR)
                model = merge_lora(self.model, self.lora)
            if cfg.lora_save != "adapter":
                model.save_pretrained(self.out)
            _plot_curve(self.records, self.out / CURVE_FILE)
            d = self.data
            summary = {
                "format": TRAINING_FORMAT,
                "embodiment": self.spec.name,
                "action_space": self.converter.space,
                "action_names": list(self.converter.names),
                "camera_slots": list(model.config.camera_slots),
                "chunk_size": model.config.chunk_size,
                "period_s": self.spec.policy_period_s,
                "preset": model.config.preset,
                "init_from": cfg.init_from,
                "datasets": [s.name for s in self.sources],
                "episodes": len(d.episode_keys),
                "val_episodes": list(d.val_episodes),
                "samples": {"train": int(len(d.train_index)), "val": int(len(d.val_index))},
                "early_frames": {"frames": cfg.early_frames, "weight": cfg.early_weight},
                "colour_permutation": cfg.colour_permutation,
                "goal": None if self.goal_stats is None else {
                    "weight": cfg.goal_weight, "condition": model.config.goal_condition, "noise_m": cfg.goal_noise_m,
                    "mean_m": [round(float(v), 6) for v in self.goal_stats[0]],
                    "std_m": [round(float(v), 6) for v in self.goal_stats[1]]},
                "tasks": d.tasks,
                "steps": cfg.steps,
                "batch_size": cfg.batch_size,
                "world_size": self.dist.world,
                "lora": {"rank": cfg.lora_rank, "saved": cfg.lora_save} if cfg.lora else None,
                "parameters": {"total": model.num_parameters(), "trainable": model.num_parameters(trainable_only=True)},
                "final_loss": loss,
                "final_val_loss": val,
                "timings_s": {"data": round(self.data_s, 2), "train": round(train_s, 2)},
                "samples_per_s": round(rate, 2),
                "config": dataclasses.asdict(cfg),
            }
            (self.out / TRAINING_FILE).write_text(json.dumps(summary, indent=2))
        self.dist.barrier()
        return TrainResult(self.out, cfg.steps, loss, val, rate, summary)


def train(cfg: TrainConfig, sources: Sequence | None = None) -> TrainResult:
    """Train (or fine-tune) and save; see Trainer."""
    return Trainer(cfg, sources).run()
