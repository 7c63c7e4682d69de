"""Image preprocessing against hand-computed values and against Pillow's resampling filters
(the reference the Hugging Face image processors use)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from vla_ros.policies import preprocess as pp


def _rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_images_to_tensor_layout():
    a = _rng_image(4, 5)
    t = pp.images_to_tensor([a, a[::-1].copy()])
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.uint8
    assert t[0, 2, 3, 1].item() == a[3, 1, 2]  # channel 2 (blue) of pixel (3, 1)
    assert t[1, 0, 0, 0].item() == a[3, 0, 0]
    with pytest.raises(ValueError, match=r"image 1 must be an \(H, W, 3\) uint8 RGB array"):
        pp.images_to_tensor([a, a.astype(np.float32)])
    with pytest.raises(ValueError, match="image 1 is"):
        pp.images_to_tensor([a, _rng_image(5, 5)])


def test_normalize_hand_computed():
    x = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    siglip = pp.normalize(x, "siglip").flatten().tolist()
    assert siglip == pytest.approx([1.0, -1.0, 128 / 255 * 2 - 1], abs=1e-6)
    imnet = pp.normalize(x, "dinov2").flatten().tolist()
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert imnet == pytest.approx(expected, abs=1e-6)
    # float input is taken as already in [0, 1]
    assert pp.normalize(x.float() / 255, "siglip").flatten().tolist() == pytest.approx(siglip, abs=1e-6)
    assert pp.normalize(x, "siglip", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(KeyError, match="unknown image normalisation 'vit'"):
        pp.normalize(x, "vit")


def test_resize_2x_box_average_hand_computed():
    # Downscaling by 2 with the antialiased triangle filter (support 2 input pixels, PIL's
    # convention): output pixel 0 is centred at input x = 1.0; input centres 0.5, 1.5, 2.5 lie
    # 0.5, 0.5, 1.5 away -> weights 1 - d/2 = 0.75, 0.75, 0.25 (sum 1.75).
    # Row [0, 8, 16, 24] -> [(0*.75 + 8*.75 + 16*.25)/1.75, (8*.25 + 16*.75 + 24*.75)/1.75].
    row = torch.tensor([0.0, 8.0, 16.0, 24.0])
    x = row.view(1, 1, 1, 4).expand(1, 3, 2, 4).contiguous()
    y = pp.resize(x, (1, 2))
    assert y[0, 0, 0].tolist() == pytest.approx([10 / 1.75, 32 / 1.75], abs=1e-5)


@pytest.mark.parametrize("mode,pil_filter", [("bilinear", PILImage.BILINEAR), ("bicubic", PILImage.BICUBIC)])
@pytest.mark.parametrize("src_hw,dst_hw", [((480, 640), (224, 224)), ((60, 80), (224, 224)), ((37, 91), (20, 33))])
def test_uint8_resize_matches_pillow(mode, pil_filter, src_hw, dst_hw):
    img = _rng_image(*src_hw, seed=1)
    ours = pp.resize(pp.images_to_tensor([img]), dst_hw, mode=mode)[0].permute(1, 2, 0).numpy()
    ref = np.asarray(PILImage.fromarray(img).resize((dst_hw[1], dst_hw[0]), pil_filter))
    diff = np.abs(ours.astype(int) - ref.astype(int))
    # both round to uint8; fixed-point coefficient precision differs by at most one level
    assert diff.max() <= 1 and diff.mean() < 0.05


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_float_path_for_non_cpu_devices_matches_uint8_kernel(mode):
    # CUDA has no uint8 resize kernel: the float fallback must give the same uint8 result
    x = pp.images_to_tensor([_rng_image(120, 160, seed=3)])
    fast = pp.resize(x, (56, 72), mode=mode)
    fallback = pp.resize_uint8_via_float(x, (56, 72), mode=mode)
    assert fallback.dtype == torch.uint8
    assert (fast.int() - fallback.int()).abs().max().item() <= 1


def test_center_crop_hand_computed():
    x = torch.arange(36, dtype=torch.float32).view(1, 1, 6, 6).expand(1, 3, 6, 6)
    c = pp.center_crop(x, 3)  # margin 3: 1 above/left, 2 below/right
    assert c[0, 0].tolist() == [[7, 8, 9], [13, 14, 15], [19, 20, 21]]
    with pytest.raises(ValueError, match="larger than the image"):
        pp.center_crop(x, (7, 3))


def test_random_crop_is_seeded_and_in_range():
    x = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10).expand(2, 3, 10, 10)
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        c, (top, left) = pp.random_crop(x, (4, 6), generator=g)
        assert 0 <= top <= 6 and 0 <= left <= 4
        assert c[1, 2, 0, 0].item() == top * 10 + left  # the window it says it took
        seen.add((top, left))
        g2 = torch.Generator().manual_seed(seed)
        assert pp.random_crop(x, (4, 6), generator=g2)[1] == (top, left)
    assert len(seen) > 10


def test_resize_with_pad_keeps_aspect():
    img = np.full((100, 200, 3), 200, np.uint8)
    y = pp.resize_with_pad(pp.images_to_tensor([img]), 224)
    assert y.shape == (1, 3, 224, 224)
    # 200x100 -> 224x112, 56 black rows above and below
    assert y[0, :, :56].max().item() == 0 and y[0, :, 168:].max().item() == 0
    assert y[0, :, 56:168].min().item() == 200


def test_preprocessor_cameras_end_to_end():
    front = np.zeros((480, 640, 3), np.uint8)
    front[..., 0] = 255  # pure red
    wrist = np.full((240, 320, 3), 128, np.uint8)
    pre = pp.ImagePreprocessor(size_px=(224, 224), normalization="siglip")
    out = pre.cameras({"wrist": wrist, "front": front, "unused": front}, ["front", "wrist"])
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    # a constant image stays constant through any resize: red -> (1, -1, -1), grey 128 -> 0.0039
    assert torch.allclose(out[0, 0], torch.tensor(1.0)) and torch.allclose(out[0, 1:], torch.tensor(-1.0))
    assert torch.allclose(out[1], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)
    with pytest.raises(KeyError, match=r"lacks camera slots \['cam_high'\]"):
        pre.cameras({"front": front}, ["cam_high"])


def test_preprocessor_center_crop_scale():
    # a 0.81-area centre crop of 10x10 keeps 9x9 = the central window, then resizes back
    pre = pp.ImagePreprocessor(size_px=(10, 10), crop="center", crop_scale=0.81, normalization="none")
    img = np.zeros((10, 10, 3), np.uint8)
    img[0, :, :] = 255  # top row: kept (a margin of 1 gives top = 0)
    img[:, 9, :] = 255  # right column: cut (the odd margin pixel goes to the right)
    out = pre([img])
    assert out.shape == (1, 3, 10, 10)
    assert out[0, 0, 0].min().item() > 0.9
    assert out[0, 0, 5:, 9].max().item() < 0.05


def test_preprocessor_validation():
    with pytest.raises(ValueError, match="crop_scale must be in"):
        pp.ImagePreprocessor(crop="center", crop_scale=0.0)
    with pytest.raises(ValueError, match="resize_mode must be"):
        pp.ImagePreprocessor(resize_mode="nearest")
    with pytest.raises(KeyError, match="unknown image normalisation"):
        pp.ImagePreprocessor(normalization="foo")
