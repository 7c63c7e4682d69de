"""The built-in learned policies: VLA checkpoints shipped inside the package, one folder per
embodiment (`vla_ros/policies/builtin/<embodiment>/`, a `save_pretrained` folder plus the
training.json of the run that made it; `scripts/train_builtin.sh` reproduces them).

Registered as the policy "builtin": the "vla" policy with the shipped checkpoint of the running
embodiment (an explicit `checkpoint` still wins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).resolve().parent


def shipped_embodiments() -> list[str]:
    """The embodiments with a shipped checkpoint folder, sorted."""
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").is_file())


def builtin_checkpoint(embodiment: str) -> Path:
    """The shipped checkpoint folder of `embodiment`; FileNotFoundError naming those that exist."""
    folder = BUILTIN_DIR / embodiment
    if not (folder / "config.json").is_file():
        have = shipped_embodiments()
        raise FileNotFoundError(f"no built-in checkpoint for embodiment '{embodiment}' (looked in {folder}); "
                                f"built-in checkpoints exist for: {', '.join(have) or 'none'}")
    return folder


def make_builtin_policy(embodiment, checkpoint: str | Path | None = None, **kwargs: Any):
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.vla.policy import make_vla_policy

    spec = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    return make_vla_policy(spec, checkpoint=checkpoint or builtin_checkpoint(spec.name), **kwargs)


#: Held-out success rate (builtin.json's `vla-ros eval` result) a shipped checkpoint needs before the
#: commands and the launch file use it when no policy is named; below it the scripted expert stays the default.
DEFAULT_MIN_SUCCESS_RATE = 0.5


def builtin_is_default(embodiment: str) -> bool:
    """True when `embodiment` has a shipped checkpoint whose measured held-out success rate
    (builtin.json, written by scripts/train_builtin.sh) reaches DEFAULT_MIN_SUCCESS_RATE."""
    import json

    try:
        meta = json.loads((builtin_checkpoint(embodiment) / "builtin.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    rate = (meta.get("eval") or {}).get("success_rate")
    return isinstance(rate, (int, float)) and rate >= DEFAULT_MIN_SUCCESS_RATE


def default_policy(embodiment: str, checkpoint: str = "", sim: bool = True) -> str:
    """The policy the commands and the launch file run when none is named: "vla" with a checkpoint;
    else, in simulation, the embodiment's shipped built-in VLA when its measured held-out success
    rate reaches DEFAULT_MIN_SUCCESS_RATE, else the scripted expert. ValueError on a real robot
    without a checkpoint: neither an untrained model nor one trained only in simulation is what a
    bare launch drives (a built-in policy runs on a real arm only when named: policy:=builtin)."""
    if checkpoint:
        return "vla"
    if sim:
        return "builtin" if builtin_is_default(embodiment) else "scripted"
    raise ValueError(f"no policy named and no checkpoint given for the real '{embodiment}': name one "
                     f"(policy:=vla checkpoint:=DIR, policy:=openvla/pi0 with a checkpoint; policy:=builtin runs "
                     f"the policy trained in simulation) or use policy:=none to teleoperate")
