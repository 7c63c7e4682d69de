"""`vla-ros checkpoint`: fixture / inspect / predict through the CLI dispatcher."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vla_ros.cli.main import main
from vla_ros.policies.checkpoints.fixtures import random_image
from vla_ros.policies.checkpoints.openvla import load_openvla
from vla_ros.policies.checkpoints.pi0 import load_pi0


def run(capsys, *argv):
    code = main(["checkpoint", *argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def test_openvla_fixture_inspect_predict(tmp_path, capsys):
    folder = tmp_path / "openvla"
    code, res, _ = run(capsys, "fixture", "openvla", str(folder))
    assert code == 0 and "model.safetensors.index.json" in res["files"] and "tokenizer.json" in res["files"]
    code, res, _ = run(capsys, "inspect", str(folder), "--device", "cpu")
    assert code == 0
    assert res["dino"] == {"dim": 32, "depth": 3, "image_size": 28}
    assert res["siglip"] == {"dim": 48, "depth": 2, "image_size": 28}
    assert res["unnorm_keys"] == {"bridge_orig": 7, "fractal20220817_data": 7}
    # the fixture writes both files with the same datasets: dataset_statistics.json is the one used
    assert res["unnorm_key_sources"] == {"bridge_orig": "dataset_statistics.json",
                                         "fractal20220817_data": "dataset_statistics.json"}
    assert res["default_unnorm_key"] is None
    image = random_image(11)
    Image.fromarray(image).save(tmp_path / "frame.png")
    code, res, _ = run(capsys, "predict", str(folder), "--image", str(tmp_path / "frame.png"),
                       "--instruction", "pick up the cube", "--unnorm-key", "bridge_orig", "--device", "cpu")
    assert code == 0 and res["inference_s"] > 0
    expected = load_openvla(folder, device="cpu").predict_action(image, "pick up the cube", "bridge_orig")
    np.testing.assert_allclose(res["action"], expected, rtol=0, atol=1e-12)


def test_pi0_predict_matches_the_library(tmp_path, capsys):
    folder = tmp_path / "pi0"
    assert run(capsys, "fixture", "pi0", str(folder))[0] == 0
    code, res, _ = run(capsys, "inspect", str(folder))
    assert code == 0 and res["chunk_size"] == 50 and res["asset_id"] == "trossen" and res["action_stats_dim"] == 32
    assert res["data_config"] == "aloha"
    image = random_image(12)
    Image.fromarray(image).save(tmp_path / "cam.png")
    state = np.linspace(-1, 1, 14)
    code, res, _ = run(capsys, "predict", str(folder), "--image", str(tmp_path / "cam.png"), "--instruction",
                       "fold", "--state=" + ",".join(str(v) for v in state), "--seed", "5", "--device", "cpu")
    assert code == 0 and np.array(res["actions"]).shape == (50, 14)
    noise = torch.randn((1, 50, 32), generator=torch.Generator().manual_seed(5))
    expected = load_pi0(folder, device="cpu").sample_actions([image], "fold", state, 14, noise=noise)
    np.testing.assert_allclose(res["actions"], expected, rtol=1e-6, atol=1e-6)


def test_bad_folders_exit_2_with_a_named_cause(tmp_path, capsys):
    folder = tmp_path / "openvla"
    run(capsys, "fixture", "openvla", str(folder))
    (folder / "model-00003-of-00003.safetensors").unlink()
    code, _, err = run(capsys, "inspect", str(folder))
    assert code == 2 and "missing shard model-00003-of-00003.safetensors" in err
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    code, _, err = run(capsys, "inspect", str(folder))
    assert code == 2 and "model_type 'llava' is neither 'openvla' nor 'pi0'" in err
    with pytest.raises(SystemExit):
        main(["checkpoint", "fixture", "octo", str(folder)])


def test_list_and_number_options_may_start_with_a_minus_sign(tmp_path, capsys):
    # `--state -0.1,...` and `--seed -4` reach the command (which then names the missing folder's
    # config.json) instead of argparse's "expected one argument".
    missing = tmp_path / "nowhere"
    code, _, err = run(capsys, "predict", str(missing), "--image", str(tmp_path / "a.png"), "--instruction", "x",
                       "--state", "-0.1,0.2,-3e-2", "--seed", "-4")
    assert code == 2 and f"{missing} lacks config.json" in err
