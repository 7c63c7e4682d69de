"""`vla-ros dataset`: look at and import LeRobotDataset v3.0 folders.

```
vla-ros dataset inspect DIR [--json]               episodes, frames, fps, features, per-feature stats
vla-ros dataset view DIR --episode K [--out PREFIX] an mp4 of the cameras side by side + a PNG of state/action
vla-ros dataset from-bag BAG --embodiment E --out DIR [--instruction TEXT] [--fps N]
```
A broken folder exits 2 with the file and the problem named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def dataset_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("inspect", help="episodes, frames, fps, features and statistics")
    p.add_argument("root", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("view", help="write an mp4 of the cameras side by side and a PNG of state and action")
    p.add_argument("root", help="dataset folder")
    p.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
    p.add_argument("--out", default="", help="output prefix (default: <root>/view/episode-K)")
    p = sub.add_parser("from-bag", help="convert a rosbag2 (MCAP or sqlite3) into a dataset")
    p.add_argument("bag", help="rosbag2 folder (or .mcap / .db3 file)")
    p.add_argument("--embodiment", required=True, help="embodiment config of the recorded arm")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--instruction", default="", help="task text (default: the bag's instruction topic)")
    p.add_argument("--fps", type=int, default=30, help="dataset frame rate (default 30)")
    p.add_argument("--source-space", default="", help="action.source space (default: the embodiment's)")


def dataset_run(args: argparse.Namespace) -> int:
    from vla_ros.data import DatasetError

    try:
        if args.dataset_command == "inspect":
            return _inspect(args)
        if args.dataset_command == "view":
            return _view(args)
        if args.dataset_command == "from-bag":
            from vla_ros.data.rosbag import BagError, convert_bag

            try:
                report = convert_bag(args.bag, args.embodiment, args.out, instruction=args.instruction, fps=args.fps,
                                     source_space=args.source_space or None)
            except BagError as err:
                print(f"vla-ros dataset from-bag: {err}", file=sys.stderr)
                return 2
            for topic, n in report["ignored_messages"].items():
                print(f"vla-ros dataset from-bag: warning: {n} malformed message(s) on {topic} left out (first: "
                      f"{report['ignored_first_errors'][topic]})", file=sys.stderr)
            print(json.dumps(report))
            return 0
    except DatasetError as err:
        print(f"vla-ros dataset: {err}", file=sys.stderr)
        return 2
    raise SystemExit(f"unknown action {args.dataset_command}")


def inspect_dataset(root: str | Path) -> dict:
    from vla_ros.data import LeRobotDataset

    ds = LeRobotDataset(root)
    episodes = []
    for row in ds.episodes_table():
        episodes.append({
            "index": int(row["episode_index"]), "length": int(row["length"]),
            "seconds": round(int(row["length"]) / float(ds.fps), 3),
            "task": (row.get("tasks") or [""])[0],
            "dropped_frames": int(row.get("dropped_frames") or 0),
            "fell_behind": bool(row.get("fell_behind") or False),
        })
    stats = {}
    for key, st in ds.stats.items():
        if key in ("index", "episode_index", "frame_index", "task_index"):
            continue
        stats[key] = {s: np.round(np.asarray(v, dtype=float).reshape(-1), 5).tolist()
                      for s, v in st.items() if s in ("min", "max", "mean", "std", "count")}
    features = {k: {"dtype": f["dtype"], "shape": list(f["shape"]), "names": f.get("names")}
                for k, f in ds.features.items()}
    return {
        "root": str(root), "codebase_version": ds.info["codebase_version"], "robot_type": ds.robot_type,
        "fps": ds.fps, "episodes": ds.num_episodes, "frames": ds.num_frames,
        "seconds": round(ds.num_frames / float(ds.fps), 3), "tasks": ds.tasks, "cameras": ds.camera_keys,
        "features": features, "stats": stats, "episode_list": episodes,
    }


def _inspect(args) -> int:
    report = inspect_dataset(args.root)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['root']}: LeRobotDataset {report['codebase_version']}, robot {report['robot_type']}, "
          f"{report['fps']} fps")
    print(f"{report['episodes']} episodes, {report['frames']} frames ({report['seconds']} s), "
          f"{len(report['tasks'])} task(s), cameras: {', '.join(report['cameras']) or 'none'}")
    print("\nfeatures:")
    for k, f in report["features"].items():
        names = f["names"] if isinstance(f["names"], list) and len(f["names"]) <= 8 else (
            f"{len(f['names'])} names" if isinstance(f["names"], list) else f["names"])
        print(f"  {k:32s} {f['dtype']:8s} {str(f['shape']):16s} {names if names is not None else ''}")
    print("\nepisodes:")
    print(f"  {'#':>4s} {'frames':>7s} {'seconds':>8s} {'dropped':>8s}  task")
    for e in report["episode_list"]:
        flag = "  (fell behind)" if e["fell_behind"] else ""
        print(f"  {e['index']:4d} {e['length']:7d} {e['seconds']:8.2f} {e['dropped_frames']:8d}  {e['task']}{flag}")
    print("\nstatistics (per dimension: min / mean / max):")
    for k, st in report["stats"].items():
        if "mean" not in st:
            continue
        cells = [f"{lo:.3g}/{m:.3g}/{hi:.3g}" for lo, m, hi in zip(st.get("min", []), st["mean"], st.get("max", []))]
        print(f"  {k:32s} {' '.join(cells[:8])}{' ...' if len(cells) > 8 else ''}")
    return 0


def _view(args) -> int:
    from vla_ros.data import LeRobotDataset

    ds = LeRobotDataset(args.root)
    ep = ds.episode(args.episode)
    prefix = Path(args.out) if args.out else Path(args.root) / "view" / f"episode-{args.episode:06d}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    mp4 = prefix.with_suffix(".mp4")
    png = prefix.with_suffix(".png")
    if ds.video_keys:
        write_side_by_side(mp4, [ep.frames(k) for k in ds.video_keys], ep.timestamps, int(round(float(ds.fps))))
    plot_episode(png, ep, ds)
    print(json.dumps({"episode": ep.index, "frames": ep.length, "task": ep.task,
                      "video": str(mp4) if ds.video_keys else None, "plot": str(png)}))
    return 0


def write_side_by_side(path: Path, cameras: list[np.ndarray], timestamps: np.ndarray, fps: int) -> None:
    """One mp4 (H.264) with the cameras next to each other (resized to the tallest by row repetition)."""
    from fractions import Fraction

    import av

    height = max(c.shape[1] for c in cameras)
    tiles = []
    for c in cameras:
        if c.shape[1] != height:  # nearest-neighbour rows: a viewing aid, not data
            rows = (np.arange(height) * c.shape[1] / height).astype(int)
            c = c[:, rows]
        tiles.append(c)
    frames = np.concatenate(tiles, axis=2)
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = Fraction(1, fps)
        s.options = {"crf": "20", "bf": "0"}
        for f, t in zip(frames, timestamps):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
            vf.pts = int(round(t * fps))
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def plot_episode(path: Path, ep, ds) -> None:
    """A PNG of observation.state and action over time, one panel per dimension (drawn with PIL)."""
    from PIL import Image, ImageDraw

    state, action = ep.state, ep.action
    names = ds.features.get("action", {}).get("names") or [str(i) for i in range(action.shape[1])]
    n = action.shape[1]
    pw, ph, margin = 520, 110, 40
    cols = 2 if n > 4 else 1
    rows = int(np.ceil(n / cols))
    img = Image.new("RGB", (cols * (pw + margin) + margin, rows * (ph + margin) + margin), "white")
    draw = ImageDraw.Draw(img)
    t = ep.timestamps
    t_span = max(t[-1] - t[0], 1e-9) if len(t) > 1 else 1.0
    for d in range(n):
        x0 = margin + (d % cols) * (pw + margin)
        y0 = margin + (d // cols) * (ph + margin)
        draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
        series = [(action[:, d], (200, 30, 30))]
        if d < state.shape[1]:
            series.append((state[:, d], (30, 30, 200)))
        lo = min(float(s.min()) for s, _ in series)
        hi = max(float(s.max()) for s, _ in series)
        span = hi - lo if hi > lo else 1.0
        for values, colour in series:
            pts = [(x0 + (ti - t[0]) / t_span * pw, y0 + ph - (v - lo) / span * ph) for ti, v in zip(t, values)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
        draw.text((x0, y0 - 14), f"{names[d]}  [{lo:.3g}, {hi:.3g}]  red: action, blue: state", fill="black")
    draw.text((margin, 5), f"episode {ep.index}: {ep.task}  ({ep.length} frames, {t_span:.2f} s)", fill="black")
    img.save(path)
