"""Normalisation statistics of actions and states, in the formats real checkpoints ship.

Two published formats are read:

- OpenVLA / Octo `dataset_statistics.json` (also embedded as `norm_stats` in an OpenVLA
  `config.json`): ``{dataset: {"action": {mean, std, max, min, q01, q99, mask},
  "proprio": {...}, "num_transitions", "num_trajectories"}}``.
- openpi `norm_stats.json`: ``{"norm_stats": {"state": {mean, std, q01, q99},
  "actions": {...}}}``.

Both become one `NormStats`: a mapping of canonical keys (``"action"``, ``"state"``) to
`FeatureStats`. OpenVLA's ``"proprio"`` and openpi's ``"actions"`` are accepted as aliases.

Rules (each a paired normalise / unnormalise):

- ``"bounds_q99"`` (OpenVLA): ``clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)`` where
  `mask` is true, and 0 where min == max (unused dimensions); unnormalise
  ``0.5 (x + 1)(q99 - q01) + q01`` where `mask` is true. Masked-out dims pass through.
- ``"bounds"`` (Octo / OpenVLA min-max variant): as above with min / max instead of q01 / q99.
- ``"quantile"`` (openpi): ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1`` (no clipping), and its
  exact inverse ``(x + 1) / 2 (q99 - q01 + 1e-6) + q01``.
- ``"mean_std"`` (openpi z-score): ``(x - mean) / (std + eps)``, inverse ``x (std + eps) + mean``
  with eps = 1e-6 (openpi's constant) unless given.

numpy only: this module is part of the pure core.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

NORM_RULES = ("bounds_q99", "bounds", "quantile", "mean_std")

#: canonical key -> accepted spellings in the published formats
_KEY_ALIASES = {
    "action": "action",
    "actions": "action",
    "state": "state",
    "proprio": "state",
}

# Constants of the reference implementations; changing them breaks bit-compatibility.
_OPENVLA_NORM_EPS = 1e-8
_OPENPI_EPS = 1e-6

_STAT_FIELDS = ("mean", "std", "min", "max", "q01", "q99")
_RULE_NEEDS = {
    "bounds_q99": ("q01", "q99"),
    "bounds": ("min", "max"),
    "quantile": ("q01", "q99"),
    "mean_std": ("mean", "std"),
}

OUR_FORMAT = "vla_ros.norm_stats/1"


def canonical_key(key: str) -> str:
    """``"actions"`` -> ``"action"``, ``"proprio"`` -> ``"state"``; other keys unchanged."""
    return _KEY_ALIASES.get(key, key)


def _vector(name: str, value: Any, dim: int | None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise ValueError(f"normalisation statistic '{name}' must be a 1-D vector, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"normalisation statistic '{name}' has {arr.shape[0]} entries, expected {dim}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"normalisation statistic '{name}' contains non-finite values: {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class FeatureStats:
    """Statistics of one feature (action or state), every vector of shape (dim,).

    Statistics a format does not provide are None; a rule that needs one fails naming it.
    `mask` (bool, default all true) selects the dims the bounds rules (un)normalise.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        dim: int | None = None
        for name in _STAT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            vec = _vector(name, value, dim)
            dim = vec.shape[0]
            object.__setattr__(self, name, vec)
        if dim is None:
            raise ValueError(f"FeatureStats needs at least one of {_STAT_FIELDS}")
        if self.mask is None:
            mask = np.ones(dim, dtype=bool)
        else:
            raw = np.asarray(self.mask)
            if raw.ndim != 1 or raw.shape[0] != dim:
                raise ValueError(f"normalisation mask has shape {raw.shape}, expected ({dim},)")
            if raw.dtype != bool and not np.all(np.isin(raw, (0, 1))):
                raise ValueError(f"normalisation mask must be boolean, got {raw.tolist()}")
            mask = raw.astype(bool)
        mask.setflags(write=False)
        object.__setattr__(self, "mask", mask)
        if self.std is not None and np.any(self.std < 0):
            raise ValueError(f"normalisation statistic 'std' must be >= 0, got {self.std.tolist()}")

    @property
    def dim(self) -> int:
        return int(self.mask.shape[0])

    def first(self, dims: int) -> "FeatureStats":
        """Statistics of the first `dims` dimensions (stats computed on padded vectors)."""
        if not 0 < dims <= self.dim:
            raise ValueError(f"cannot take the first {dims} dims of {self.dim}-D statistics")
        kwargs = {n: (None if getattr(self, n) is None else getattr(self, n)[:dims]) for n in _STAT_FIELDS}
        return FeatureStats(mask=self.mask[:dims], **kwargs)

    def _require(self, rule: str) -> tuple[np.ndarray, np.ndarray]:
        if rule not in _RULE_NEEDS:
            raise ValueError(f"unknown normalisation rule '{rule}'; valid rules: {', '.join(NORM_RULES)}")
        a_name, b_name = _RULE_NEEDS[rule]
        missing = [n for n in (a_name, b_name) if getattr(self, n) is None]
        if missing:
            raise ValueError(f"normalisation rule '{rule}' needs statistics {missing}, which these stats lack")
        return getattr(self, a_name), getattr(self, b_name)

    def _check(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            raise ValueError(f"cannot (un)normalise an array of shape {arr.shape} with {self.dim}-D statistics "
                             f"(the last axis must have {self.dim} entries)")
        return arr

    def normalize(self, x: Any, rule: str, eps: float | None = None) -> np.ndarray:
        """Raw values (..., dim) -> normalised values (..., dim) by `rule` (see module doc)."""
        a, b = self._require(rule)
        arr = self._check(x)
        if rule in ("bounds_q99", "bounds"):
            e = _OPENVLA_NORM_EPS if eps is None else eps
            scaled = np.clip(2.0 * (arr - a) / (b - a + e) - 1.0, -1.0, 1.0)
            out = np.where(self.mask, scaled, arr)
            if self.min is not None and self.max is not None:
                # OpenVLA's data pipeline zeroes dims that never move (min == max).
                out = np.where(self.min == self.max, 0.0, out)
            return out
        e = _OPENPI_EPS if eps is None else eps
        if rule == "quantile":
            return (arr - a) / (b - a + e) * 2.0 - 1.0
        return (arr - a) / (b + e)

    def unnormalize(self, x: Any, rule: str, eps: float | None = None) -> np.ndarray:
        """Normalised values (..., dim) -> raw values, the inverse of `normalize` by `rule`."""
        a, b = self._require(rule)
        arr = self._check(x)
        if rule in ("bounds_q99", "bounds"):
            # OpenVLA's predict_action adds no epsilon here.
            return np.where(self.mask, 0.5 * (arr + 1.0) * (b - a) + a, arr)
        e = _OPENPI_EPS if eps is None else eps
        if rule == "quantile":
            return (arr + 1.0) / 2.0 * (b - a + e) + a
        return arr * (b + e) + a

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {n: getattr(self, n).tolist() for n in _STAT_FIELDS if getattr(self, n) is not None}
        out["mask"] = self.mask.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stats") -> "FeatureStats":
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping of statistics, got {type(data).__name__}")
        known = set(_STAT_FIELDS) | {"mask"}
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class NormStats:
    """Statistics per feature key (``"action"``, ``"state"``) of one dataset.

    source:            where the stats came from (e.g. the OpenVLA unnorm_key "bridge_orig").
    num_transitions / num_trajectories: dataset size when the format records it.
    """

    features: Mapping[str, FeatureStats]
    source: str = ""
    num_transitions: int | None = None
    num_trajectories: int | None = None

    def __post_init__(self) -> None:
        canon: dict[str, FeatureStats] = {}
        for key, stats in self.features.items():
            if not isinstance(stats, FeatureStats):
                raise TypeError(f"NormStats feature '{key}' must be FeatureStats, got {type(stats).__name__}")
            ck = canonical_key(key)
            if ck in canon:
                raise ValueError(f"NormStats has two entries for '{ck}' (aliases of each other)")
            canon[ck] = stats
        if not canon:
            raise ValueError("NormStats needs at least one feature")
        object.__setattr__(self, "features", canon)

    def __getitem__(self, key: str) -> FeatureStats:
        ck = canonical_key(key)
        if ck not in self.features:
            raise KeyError(f"no normalisation statistics for '{key}'; have {sorted(self.features)}")
        return self.features[ck]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and canonical_key(key) in self.features

    def normalize(self, key: str, x: Any, rule: str, eps: float | None = None) -> np.ndarray:
        return self[key].normalize(x, rule, eps)

    def unnormalize(self, key: str, x: Any, rule: str, eps: float | None = None) -> np.ndarray:
        return self[key].unnormalize(x, rule, eps)

    # ---- our own schema -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": OUR_FORMAT,
            "source": self.source,
            "features": {k: v.to_dict() for k, v in self.features.items()},
        }
        if self.num_transitions is not None:
            out["num_transitions"] = self.num_transitions
        if self.num_trajectories is not None:
            out["num_trajectories"] = self.num_trajectories
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to our schema; also writes `path` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NormStats":
        if data.get("format") != OUR_FORMAT:
            raise ValueError(f"not a vla_ros normalisation file: 'format' is {data.get('format')!r}, "
                             f"expected {OUR_FORMAT!r}")
        feats = data.get("features")
        if not isinstance(feats, Mapping):
            raise ValueError("vla_ros normalisation file lacks the 'features' mapping")
        return cls(
            features={k: FeatureStats.from_dict(v, f"features/{k}") for k, v in feats.items()},
            source=str(data.get("source", "")),
            num_transitions=_opt_int(data.get("num_transitions")),
            num_trajectories=_opt_int(data.get("num_trajectories")),
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "NormStats":
        """Read our schema from a JSON string or a file path."""
        return cls.from_dict(_load_json(text_or_path))

    # ---- published formats ----------------------------------------------------------------
    @classmethod
    def from_openvla(cls, data: Mapping[str, Any] | str | Path, unnorm_key: str | None = None) -> "NormStats":
        """Read OpenVLA `dataset_statistics.json` / config `norm_stats` (dict, JSON text or path).

        `unnorm_key` picks the dataset; it may be omitted only when the file holds one dataset.
        """
        raw = _load_json(data) if isinstance(data, (str, Path)) else data
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError("OpenVLA normalisation statistics must be a non-empty mapping {dataset: {...}}")
        datasets = sorted(raw)
        if unnorm_key is None:
            if len(datasets) != 1:
                raise ValueError(f"the statistics hold {len(datasets)} datasets; pass unnorm_key, one of {datasets}")
            unnorm_key = datasets[0]
        if unnorm_key not in raw:
            raise KeyError(f"unnorm_key '{unnorm_key}' is not in the statistics; available keys: {datasets}")
        entry = raw[unnorm_key]
        if not isinstance(entry, Mapping) or "action" not in entry:
            raise ValueError(f"OpenVLA statistics for '{unnorm_key}' lack the 'action' entry")
        feats = {"action": FeatureStats.from_dict(entry["action"], f"{unnorm_key}/action")}
        if "proprio" in entry:
            feats["state"] = FeatureStats.from_dict(entry["proprio"], f"{unnorm_key}/proprio")
        return cls(
            features=feats,
            source=unnorm_key,
            num_transitions=_opt_int(entry.get("num_transitions")),
            num_trajectories=_opt_int(entry.get("num_trajectories")),
        )

    @classmethod
    def from_openpi(cls, data: Mapping[str, Any] | str | Path) -> "NormStats":
        """Read openpi `norm_stats.json` (dict, JSON text or path)."""
        raw = _load_json(data) if isinstance(data, (str, Path)) else data
        if not isinstance(raw, Mapping) or not isinstance(raw.get("norm_stats"), Mapping):
            raise ValueError("openpi statistics must be {'norm_stats': {'state': {...}, 'actions': {...}}}")
        stats = raw["norm_stats"]
        return cls(
            features={k: FeatureStats.from_dict(v, f"norm_stats/{k}") for k, v in stats.items()},
            source="openpi",
        )

    def to_openpi(self) -> dict[str, Any]:
        """The openpi `norm_stats.json` layout (openpi names the action key ``"actions"``)."""
        out = {}
        for key, fs in self.features.items():
            d = {n: getattr(fs, n).tolist() for n in ("mean", "std", "q01", "q99") if getattr(fs, n) is not None}
            out["actions" if key == "action" else key] = d
        return {"norm_stats": out}

    def to_openvla(self) -> dict[str, Any]:
        """The OpenVLA `dataset_statistics.json` layout, keyed by `source`."""
        if not self.source:
            raise ValueError("to_openvla needs NormStats.source (the dataset name used as unnorm_key)")
        entry: dict[str, Any] = {("proprio" if k == "state" else k): fs.to_dict() for k, fs in self.features.items()}
        if self.num_transitions is not None:
            entry["num_transitions"] = self.num_transitions
        if self.num_trajectories is not None:
            entry["num_trajectories"] = self.num_trajectories
        return {self.source: entry}


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    # The published files store counts as JSON numbers; some writers emit floats like 1.0e5.
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"dataset counts must be integers, got {value}")
    return int(value)


def _load_json(text_or_path: Any) -> Any:
    if isinstance(text_or_path, Mapping):
        return text_or_path
    text = str(text_or_path)
    if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"normalisation statistics file not found: {path}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return json.loads(text)
