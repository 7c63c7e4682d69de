"""`vla-ros train`: train or fine-tune the VLA on LeRobotDataset v3.0 folders.

    vla-ros train --data DIR [DIR ...] --out CKPT [--preset P | --from CKPT] [--action-space S]
                  [--lora] [--steps N] [--batch-size B] [--lr LR] [--seed S] [--resume] ...

The output folder is a `save_pretrained` model (loadable by `policy:=vla checkpoint:=CKPT`, with
the normalisation statistics of the data) plus training.json (what was trained on what, timings),
metrics.jsonl (loss, lr, samples/s per step; validation loss on held-out episodes), loss_curve.png
and checkpoints/ (periodic; `--resume` continues a killed run exactly). Data parallel:
`torchrun --nproc_per_node K -m vla_ros.cli.main train ...` (--batch-size is the global batch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def train_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from vla_ros.policies.vla.presets import PRESETS

    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="LeRobotDataset v3.0 folder(s)")
    parser.add_argument("--out", required=True, metavar="CKPT", help="output folder (model + metrics + checkpoints)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default="default", choices=sorted(PRESETS), help="model preset to train from scratch")
    source.add_argument("--from", dest="init_from", default=None, metavar="CKPT",
                        help="fine-tune this save_pretrained folder instead")
    parser.add_argument("--embodiment", default=None, help="embodiment config (default: the dataset's robot_type)")
    parser.add_argument("--action-space", default=None,
                        help="joint_position, joint_delta, ee_delta, ee_pose (default: the embodiment's), or "
                             "'dataset' (the recorded action vectors as they are)")
    parser.add_argument("--chunk-size", type=int, default=None, help="action chunk rows (default: the preset's)")
    parser.add_argument("--config", default="{}", metavar="JSON",
                        help="VLAConfig overrides for the preset, e.g. '{\"head\": {\"kind\": \"diffusion\"}}'")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (all processes together)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no random resized crop / colour jitter")
    parser.add_argument("--lora", action="store_true", help="LoRA on the backbone's linear layers, vision frozen")
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--lora-save", default="merged", choices=["merged", "adapter", "both"],
                        help="merged weights (default), the adapter only (needs --from), or both (adapter in OUT/adapter)")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint period in steps")
    parser.add_argument("--keep-checkpoints", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=100, help="validation period in steps")
    parser.add_argument("--val-episodes", type=int, default=None,
                        help="held-out episodes (default: 10 %% of them, seeded)")
    parser.add_argument("--val-samples", type=int, default=64, help="validation frames per evaluation")
    parser.add_argument("--min-episode-frames", type=int, default=1,
                        help="leave out episodes with fewer frames (recordings cut short)")
    parser.add_argument("--max-episodes", type=int, default=None, metavar="N",
                        help="train on the first N episodes only (in --data order; for a learning curve)")
    parser.add_argument("--skip-missed-grasps", action="store_true",
                        help="leave out the frames that lead to a grasp the episode lets go of again (an approach "
                             "that missed, e.g. the scripted expert's miss_fraction episodes); the recovery stays")
    parser.add_argument("--early-frames", type=int, default=0,
                        help="the first N frames of every episode (where the policy must decide, from the image and "
                             "the instruction alone, which object to go for) ...")
    parser.add_argument("--early-weight", type=int, default=1,
                        help="... are drawn this many times per epoch (1: uniform)")
    parser.add_argument("--goal-weight", type=float, default=1.0,
                        help="weight of the goal head's loss (a model built with --config '{\"goal_head\": true}')")
    parser.add_argument("--goal-noise", type=float, default=0.0, metavar="M",
                        help="per-axis standard deviation (m) of the noise on the demonstration's goal the flow head "
                             "is conditioned on in training (--config '{\"goal_condition\": true}')")
    parser.add_argument("--colour-permutation", action="store_true",
                        help="augment with the RGB channels in a random order and the instruction's colour words "
                             "(red/green/blue) renamed to match: for tasks that name objects by colour")
    parser.add_argument("--cache-dir", default=None, help="frame cache (default: ~/.cache/vla_ros/frames)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print training.json's summary as the last line")


def config_from_args(args: argparse.Namespace):
    from vla_ros.train.loop import TrainConfig

    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config is not valid JSON: {err}") from None
    if not isinstance(overrides, dict):
        raise SystemExit(f"--config must be a JSON object, got {args.config!r}")
    try:
        return TrainConfig(
            data=tuple(args.data), out=args.out, embodiment=args.embodiment, preset=args.preset,
            init_from=args.init_from, action_space=args.action_space, chunk_size=args.chunk_size,
            config_overrides=overrides, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, schedule=args.schedule,
            max_grad_norm=args.max_grad_norm, seed=args.seed, augment=not args.no_augment, lora=args.lora,
            lora_rank=args.lora_rank, lora_save=args.lora_save, save_every=args.save_every,
            keep_checkpoints=args.keep_checkpoints,
            val_every=args.val_every, val_episodes=args.val_episodes, val_samples=args.val_samples,
            min_episode_frames=args.min_episode_frames, max_episodes=args.max_episodes,
            skip_missed_grasps=args.skip_missed_grasps,
            early_frames=args.early_frames,
            early_weight=args.early_weight, goal_weight=args.goal_weight, goal_noise_m=args.goal_noise,
            colour_permutation=args.colour_permutation, cache_dir=args.cache_dir,
            resume=args.resume, progress=not args.no_progress,
        )
    except ValueError as err:
        raise SystemExit(f"vla-ros train: {err}") from None


def train_run(args: argparse.Namespace) -> int:
    import torch

    from vla_ros.data import DatasetError
    from vla_ros.train.data import TrainingDataError
    from vla_ros.train.loop import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = train(cfg)
    except (DatasetError, TrainingDataError, FileExistsError, FileNotFoundError) as err:
        print(f"vla-ros train: {err}", file=sys.stderr)
        return 2
    if result.summary:
        s = result.summary
        print(f"trained {s['steps']} steps on {s['episodes']} episodes ({s['samples']['train']} frames) in "
              f"{s['timings_s']['train']} s ({s['samples_per_s']} samples/s): loss {result.final_loss:.4f}, "
              f"validation {result.val_loss if result.val_loss is None else round(result.val_loss, 4)}; "
              f"saved to {result.out}")
        if args.json:
            print(json.dumps({k: v for k, v in s.items() if k != "config"}))
    return 0
