"""Built-in policies. Factories are imported only when a policy of that name is made."""

from vla_ros.policies.base import register_policy

register_policy(
    "scripted",
    "vla_ros.policies.scripted:make_scripted_policy",
    "scripted expert using simulation ground truth (sim only)",
)
register_policy(
    "replay",
    "vla_ros.policies.replay:make_replay_policy",
    "replays the actions of a recorded episode",
)
register_policy(
    "vla",
    "vla_ros.policies.vla.policy:make_vla_policy",
    "the VLA model (vision encoder -> language backbone -> action head) from a checkpoint folder or preset",
)
register_policy(
    "openvla",
    "vla_ros.policies.checkpoints.openvla:make_openvla_policy",
    "a released OpenVLA checkpoint folder (HF layout): checkpoint:=PATH unnorm_key:=DATASET",
)
register_policy(
    "pi0",
    "vla_ros.policies.checkpoints.pi0:make_pi0_policy",
    "a pi0 checkpoint folder (transformers PI0 + openpi norm_stats.json): checkpoint:=PATH [unnorm_key:=ASSET]",
)
register_policy(
    "builtin",
    "vla_ros.policies.builtin:make_builtin_policy",
    "the VLA checkpoint shipped for the embodiment (vla_ros/policies/builtin/<embodiment>/; scripts/train_builtin.sh)",
)
