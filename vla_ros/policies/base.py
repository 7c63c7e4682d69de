"""The Policy protocol and the registry of policies by name.

A policy is tiny: `infer(observation) -> ActionChunk` and `reset()`. Behaviour (async
brokering, action-space conversion, ...) is added by wrappers, never by flags.

Policies register under a name with a factory; the factory is imported lazily so that a
scripted policy never pulls torch in. An unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from vla_ros.core.types import ActionChunk, Observation


@runtime_checkable
class Policy(Protocol):
    #: names of the action dimensions of every chunk this policy returns
    action_names: tuple[str, ...]
    #: seconds between chunk rows
    period_s: float
    #: True if the policy needs Observation.privileged (simulation ground truth)
    needs_privileged: bool

    # Optional: `thread_safe = True` if infer() may run on two threads at once (the policy node
    # then pipelines inferences when the latency needs it); absent means False.

    def infer(self, observation: Observation) -> ActionChunk: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    target: str  # "module.path:factory"
    description: str

    def load(self) -> Callable[..., Policy]:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)


_REGISTRY: dict[str, PolicyEntry] = {}


def register_policy(name: str, target: str, description: str) -> None:
    if name in _REGISTRY and _REGISTRY[name].target != target:
        raise ValueError(f"policy '{name}' is already registered as {_REGISTRY[name].target}")
    _REGISTRY[name] = PolicyEntry(name, target, description)


def available_policies() -> dict[str, str]:
    _ensure_builtins()
    return {name: e.description for name, e in sorted(_REGISTRY.items())}


def _ensure_builtins() -> None:
    import vla_ros.policies.catalog  # noqa: F401  (registers the built-in policies)


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered under `name`; kwargs go to its factory.

    Every factory accepts `embodiment` (an EmbodimentSpec) plus its own keyword arguments.
    """
    _ensure_builtins()
    if name not in _REGISTRY:
        valid = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        raise KeyError(f"unknown policy '{name}'; valid policies: {valid}")
    return _REGISTRY[name].load()(**kwargs)
