"""Adapters for released VLA checkpoints (OpenVLA, π0) and writers of tiny fixtures in their formats.

Import the submodules directly (`vla_ros.policies.checkpoints.openvla`, `.pi0`, `.fixtures`);
this package imports nothing heavy on its own.
"""
