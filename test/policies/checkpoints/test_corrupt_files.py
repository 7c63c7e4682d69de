"""Truncated / corrupt .safetensors files and bad index entries: one CheckpointError naming the
file, exit status 2 from `vla-ros checkpoint`, a failed configure (not a crash) in policy_node."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from vla_ros.cli.main import main
from vla_ros.policies.checkpoints.common import CheckpointError
from vla_ros.policies.checkpoints.fixtures import write_openvla_fixture, write_pi0_fixture
from vla_ros.policies.checkpoints.openvla import load_openvla
from vla_ros.policies.checkpoints.pi0 import load_pi0

LOADERS = {"openvla": load_openvla, "pi0": load_pi0}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    return {"openvla": write_openvla_fixture(root / "openvla"), "pi0": write_pi0_fixture(root / "pi0")}


@pytest.fixture(params=sorted(LOADERS))
def copy(request, folders, tmp_path):
    kind = request.param
    dst = tmp_path / kind
    shutil.copytree(folders[kind], dst)
    return kind, dst


def _first_shard(folder):
    return sorted(folder.glob("*.safetensors"))[0]


def _truncate_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_too_large(path):
    # an 8-byte little-endian header length far beyond the file: safetensors' "header too large"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def _header_not_json(path):
    body = b"{not json}"
    path.write_bytes(struct.pack("<Q", len(body)) + body)


@pytest.mark.parametrize("damage,what", [
    (_truncate_half, "incomplete metadata"),
    (_header_too_large, "header too large"),
    (_header_not_json, "invalid JSON"),
])
def test_a_corrupt_shard_is_one_error_naming_the_file(copy, damage, what):
    kind, folder = copy
    shard = _first_shard(folder)
    damage(shard)
    with pytest.raises(CheckpointError) as info:
        LOADERS[kind](folder, device="cpu")
    message = str(info.value)
    assert message.startswith(f"{shard}: not a readable safetensors file, truncated or corrupt")
    assert what in message and "\n" not in message


def test_an_index_entry_naming_a_pickle_file_is_refused(copy):
    kind, folder = copy
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    key = sorted(index["weight_map"])[0]
    index["weight_map"][key] = "pytorch_model.bin"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(CheckpointError, match=rf"assigns '{key}' to 'pytorch_model.bin', which is not a "
                                              r"\.safetensors file .*pickle weights"):
        LOADERS[kind](folder, device="cpu")


def test_an_index_entry_naming_a_missing_file_is_refused(copy):
    kind, folder = copy
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    key = sorted(index["weight_map"])[0]
    index["weight_map"][key] = "model-00009-of-00009.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"missing shard model-00009-of-00009.safetensors .*'{key}'"):
        LOADERS[kind](folder, device="cpu")


def test_an_index_entry_for_a_tensor_its_shard_lacks_is_refused(copy):
    kind, folder = copy
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["made.up.weight"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{shard} lacks tensor 'made.up.weight' that the index assigns"):
        LOADERS[kind](folder, device="cpu")


@pytest.mark.parametrize("action", ["inspect", "predict"])
def test_the_command_line_exits_2_with_one_line(copy, action, tmp_path, capsys):
    kind, folder = copy
    shard = _first_shard(folder)
    _truncate_half(shard)
    argv = ["checkpoint", action, str(folder), "--device", "cpu"]
    if action == "predict":
        from PIL import Image

        from vla_ros.policies.checkpoints.fixtures import random_image

        Image.fromarray(random_image(1)).save(tmp_path / "frame.png")
        argv += ["--image", str(tmp_path / "frame.png"), "--instruction", "fold", "--state", "-0.1,0.2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vla-ros checkpoint: {shard}: ")
    assert "incomplete metadata" in err


@pytest.mark.ros
def test_policy_node_configure_fails_naming_the_file(folders, tmp_path, capfd):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from vla_ros.nodes.policy_node import PolicyNode

    folder = tmp_path / "openvla"
    shutil.copytree(folders["openvla"], folder)
    shard = _first_shard(folder)
    _header_too_large(shard)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        params = dict(embodiment="fr3", policy="openvla", checkpoint=str(folder), autostart=False,
                      policy_kwargs=json.dumps({"unnorm_key": "bridge_orig", "device": "cpu"}))
        node = PolicyNode(namespace="/corrupt_ckpt", context=context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.policy is None
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    err = capfd.readouterr().err
    assert f"configure failed: {shard}: not a readable safetensors file" in err and "header too large" in err
