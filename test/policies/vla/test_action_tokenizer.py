"""ActionTokenizer against OpenVLA's formulas (recomputed here) and hand-picked values."""

import numpy as np
import pytest
import torch

from vla_ros.policies.vla.action_tokenizer import ActionTokenizer


def reference_encode(a, vocab=32000):
    # OpenVLA: clip, np.digitize against linspace(-1, 1, 256), id = vocab - bin
    bins = np.linspace(-1.0, 1.0, 256)
    return vocab - np.digitize(np.clip(a, -1.0, 1.0), bins)


def reference_decode(ids, vocab=32000):
    bins = np.linspace(-1.0, 1.0, 256)
    centres = (bins[:-1] + bins[1:]) / 2.0
    return centres[np.clip(vocab - ids - 1, 0, 254)]


def test_token_id_range_is_the_last_256_llama_ids():
    tok = ActionTokenizer()
    assert tok.first_token_id == 31744 and tok.last_token_id == 31999
    assert tok.token_id_range == range(31744, 32000) and len(tok.token_id_range) == 256
    assert tok.bin_centers.shape == (255,)
    np.testing.assert_array_equal(tok.is_action_token(np.array([31743, 31744, 31999, 32000])),
                                  [False, True, True, False])


def test_hand_picked_values():
    tok = ActionTokenizer()
    step = 2.0 / 255.0  # bin width
    # -1 sits on the first edge: digitize -> 1 -> id 31999 -> centres[0] = -1 + step/2
    assert tok.encode(np.array([-1.0]))[0] == 31999
    assert tok.decode(np.array([31999]))[0] == pytest.approx(-1.0 + step / 2, abs=1e-15)
    # +1 is >= the last edge: digitize -> 256 -> id 31744 -> index 255 clipped to 254 -> last centre
    assert tok.encode(np.array([1.0]))[0] == 31744
    assert tok.decode(np.array([31744]))[0] == pytest.approx(1.0 - step / 2, abs=1e-15)
    # id 31745 -> index 254 too: the two extreme ids decode to the same value
    assert tok.decode(np.array([31745]))[0] == tok.decode(np.array([31744]))[0]
    # out-of-range values are clipped first
    np.testing.assert_array_equal(tok.encode(np.array([-5.0, 7.0])), [31999, 31744])
    # 0 lies in bin 128 (edges 127 and 128 are -1/255 and +1/255): id 32000 - 128
    assert tok.encode(np.array([0.0]))[0] == 31872
    assert tok.decode(np.array([31872]))[0] == pytest.approx(0.0, abs=1e-15)
    # a value exactly on an interior edge goes to the upper bin (numpy digitize, right=False)
    edge = np.linspace(-1, 1, 256)[10]
    assert tok.encode(np.array([edge]))[0] == 32000 - 11


def test_matches_openvla_formulas_on_random_actions_numpy_and_torch():
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.uniform(-1.2, 1.2, size=(500, 7)),
                        np.linspace(-1, 1, 256)[None, :7]]).astype(np.float32)
    tok = ActionTokenizer()
    ids = tok.encode(a)
    np.testing.assert_array_equal(ids, reference_encode(a))
    np.testing.assert_array_equal(tok.decode(ids), reference_decode(ids))
    # round trip lands within half a bin of the clipped input
    assert np.max(np.abs(tok.decode(ids) - np.clip(a, -1, 1))) <= 1.0 / 255.0 + 1e-6
    t_ids = tok.encode(torch.from_numpy(a))
    assert isinstance(t_ids, torch.Tensor)
    np.testing.assert_array_equal(t_ids.numpy(), ids)
    np.testing.assert_array_equal(tok.decode(t_ids).numpy(), reference_decode(ids))


def test_other_vocab_sizes_and_bin_counts():
    tok = ActionTokenizer(vocab_size=1000, n_bins=11)
    assert tok.token_id_range == range(989, 1000)
    np.testing.assert_allclose(tok.bin_centers, np.arange(-0.9, 1.0, 0.2), atol=1e-12)
    assert tok.encode(np.array([0.05]))[0] == 1000 - 6
    assert tok.decode(np.array([994]))[0] == pytest.approx(0.1)


def test_refusals():
    with pytest.raises(ValueError, match="vocab_size must be an integer > n_bins"):
        ActionTokenizer(vocab_size=100, n_bins=256)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        ActionTokenizer(n_bins=1)
    tok = ActionTokenizer()
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="floating"):
        tok.encode(np.array([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(np.array([31999.0]))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 16), elements=st.floats(-3.0, 3.0)))
def test_property_numpy_torch_agree_and_roundtrip_stays_within_one_bin(a):
    tok = ActionTokenizer()
    ids = tok.encode(a)
    np.testing.assert_array_equal(ids, reference_encode(a))
    np.testing.assert_array_equal(tok.encode(torch.from_numpy(a)).numpy(), ids)
    assert np.all(tok.is_action_token(ids))
    # a value in bin i (edges i-1, i) decodes to the centre of that bin, and +1 to the last
    # centre: never more than half a bin width (1/255) from the clipped input
    assert np.max(np.abs(tok.decode(ids) - np.clip(a, -1, 1))) <= 1.0 / 255.0 + 1e-12
