"""Video files of a LeRobotDataset v3.0 through PyAV: encode an episode's frames (on a worker
thread, never on a ROS callback thread), append an encoded episode to a concatenated file
without re-encoding, and decode a time range back to RGB frames.

Conventions (what LeRobot writes and reads):
- one stream per file, yuv420p, constant frame rate `fps`; frame k of an episode has the
  presentation time `from_timestamp + k / fps` in the concatenated file;
- a keyframe every `gop` frames (LeRobot's default g=2) so random access decodes little;
- codec: AV1 (libsvtav1, LeRobot's default) where the PyAV wheel has an encoder, else H.264
  (libx264, no B-frames so that decode order = presentation order and files concatenate).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (its banner goes to stderr per file)

AV1 = "libsvtav1"
H264 = "libx264"


def available_codec(preferred: str = "auto") -> str:
    """The encoder to use: `preferred` if this PyAV build has it; "auto" = AV1, else H.264."""
    import av

    candidates = [AV1, H264] if preferred in ("auto", "") else [preferred]
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
    raise ValueError(f"no video encoder among {candidates} in this PyAV build")


def codec_info_name(codec: str) -> str:
    """The `video.codec` value LeRobot writes in info.json."""
    return {AV1: "av1", "av1": "av1", H264: "h264", "h264": "h264"}.get(codec, codec)


# SVT-AV1 preset: 8 keeps every frame of the simulated cameras >= 37 dB PSNR; presets 10-13 are
# faster but blur the frames between keyframes (~34 dB on a moving arm; SVT warns about M10+).
DEFAULT_AV1_PRESET = 8


def encoder_options(codec: str, gop: int, crf: int, preset: int | None = None) -> dict[str, str]:
    if codec in (AV1, "av1"):
        return {"g": str(gop), "crf": str(crf), "preset": str(DEFAULT_AV1_PRESET if preset is None else preset)}
    if codec in (H264, "h264"):
        return {"g": str(gop), "crf": str(crf), "preset": "veryfast", "bf": "0"}
    return {"g": str(gop)}


@dataclass(frozen=True)
class EncodedVideo:
    """The result of one episode's encoding."""

    path: Path
    frames: int
    first_slot: int  # slot of the first frame: the file's first frame has presentation time 0
    last_pts: int  # slot of the last frame; the episode spans last_pts + 1 frame periods
    encode_s: float  # total CPU-thread time spent encoding
    max_latency_s: float  # longest time a frame waited from submit to encoded


class EpisodeVideoEncoder:
    """Encodes one camera's frames of one episode into `path` on its own thread.

    `submit(k, rgb)` queues frame slot k (k strictly increasing; gaps are allowed: a slot that
    could not be assembled is missing from the video as it is from the data); `finish()` flushes
    and returns the EncodedVideo; `abort()` stops and deletes the file.
    """

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str, gop: int = 2, crf: int = 30,
                 max_queue: int = 256, preset: int | None = None) -> None:
        self.path = Path(path)
        self.fps = int(fps)
        self.width, self.height = int(width), int(height)
        self.codec = codec
        self.options = encoder_options(codec, gop, crf, preset)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._frames = 0
        self._first_slot: int | None = None
        self._last_pts = -1
        self._encode_s = 0.0
        self._max_latency_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"encode:{self.path.name}", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, k: int, rgb: np.ndarray) -> None:
        if self._error is not None:
            raise RuntimeError(f"video encoder for {self.path} failed: {self._error}") from self._error
        img = np.asarray(rgb)
        if img.shape != (self.height, self.width, 3) or img.dtype != np.uint8:
            raise ValueError(f"{self.path.name}: frame must be ({self.height}, {self.width}, 3) uint8, got "
                             f"{img.shape} {img.dtype}")
        self._queue.put((int(k), img, time.monotonic()))

    def finish(self) -> EncodedVideo:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"video encoder for {self.path} failed: {self._error}") from self._error
        return EncodedVideo(self.path, self._frames, self._first_slot or 0, self._last_pts, self._encode_s,
                            self._max_latency_s)

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30.0)
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        import av

        container = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(self.path), "w", format="mp4")
            stream = container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, self.fps)
            stream.options = dict(self.options)
            while True:
                item = self._queue.get()
                if item is None:
                    break
                k, img, t_submit = item
                t0 = time.thread_time()
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                if self._first_slot is None:
                    # The file starts at presentation time 0 (the mp4 muxer shifts a stream that does
                    # not, by a fraction of a frame); the writer places it at its first slot.
                    self._first_slot = k
                frame.pts = k - self._first_slot
                for packet in stream.encode(frame):
                    container.mux(packet)
                self._encode_s += time.thread_time() - t0
                self._frames += 1
                self._last_pts = k
                self._max_latency_s = max(self._max_latency_s, time.monotonic() - t_submit)
            t0 = time.thread_time()
            for packet in stream.encode():
                container.mux(packet)
            self._encode_s += time.thread_time() - t0
        except BaseException as err:  # noqa: BLE001 - reported by submit/finish
            self._error = err
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as err:  # noqa: BLE001
                    self._error = self._error or err


def video_duration_frames(path: Path, fps: int) -> int:
    """Frame periods spanned by a file: (last pts in frames) + 1; 0 for a file without frames."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        last = None
        for p in c.demux(s):
            if p.pts is not None and p.size:
                last = p.pts if last is None else max(last, p.pts)
        if last is None:
            return 0
        return int(round(float(last * s.time_base) * fps)) + 1


def append_videos(sources: list[tuple[Path, float]], out_path: Path) -> None:
    """Write `out_path` with the packets of every (file, offset_s) in order, each file's
    presentation times shifted by offset_s -- a concatenation without re-encoding. All
    sources must come from the same encoder settings (same codec parameters)."""
    import av

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_path), "w", format="mp4") as out:
        out_stream = None
        for path, offset_s in sources:
            with av.open(str(path)) as src:
                s = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(s, opaque=True)
                for packet in src.demux(s):
                    if packet.pts is None or not packet.size:
                        continue
                    shift = int(round(offset_s / float(s.time_base)))
                    packet.pts += shift
                    packet.dts = (packet.dts if packet.dts is not None else packet.pts - shift) + shift
                    packet.stream = out_stream
                    out.mux(packet)


def decode_frames(path: Path, from_s: float, to_s: float, timestamps_s: np.ndarray | None = None,
                  tolerance_s: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames (N, H, W, 3) uint8 with presentation time in [from_s, to_s), and their times.

    With `timestamps_s` (times in the file), exactly those frames, in that order; a missing
    one raises ValueError (LeRobot's tolerance: 1e-4 s)."""
    import av

    frames: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if from_s > 0:
            c.seek(int(max(from_s - 1.0, 0.0) / float(s.time_base)), stream=s, backward=True, any_frame=False)
        for frame in c.decode(s):
            if frame.pts is None:
                continue
            t = float(frame.pts * s.time_base)
            if t < from_s - tolerance_s:
                continue
            if t >= to_s - tolerance_s:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
    t_arr = np.array(times, dtype=np.float64)
    if timestamps_s is not None:
        want = np.asarray(timestamps_s, dtype=np.float64)
        if not frames:
            raise ValueError(f"{path}: no frames in [{from_s:.4f}, {to_s:.4f}) s")
        idx = np.searchsorted(t_arr, want)
        out = []
        for w, i in zip(want, idx):
            cands = [j for j in (i - 1, i) if 0 <= j < len(t_arr)]
            j = min(cands, key=lambda j: abs(t_arr[j] - w))
            if abs(t_arr[j] - w) > tolerance_s:
                raise ValueError(f"{path}: no frame at {w:.6f} s (nearest {t_arr[j]:.6f} s, tolerance {tolerance_s} s)")
            out.append(frames[j])
        return np.stack(out), want
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), t_arr
    return np.stack(frames), t_arr
