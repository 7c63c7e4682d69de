"""NormStats: published formats in, paired (un)normalisation by hand-computed cases."""

import json

import numpy as np
import pytest

from vla_ros.core.normalization import FeatureStats, NormStats

# A 7-D action (xyz, rpy, gripper) in the OpenVLA layout; gripper masked out as OpenVLA does.
BRIDGE = {
    "action": {
        "mean": [0.0002, 0.0001, -0.0001, 0.0, 0.0, 0.0, 0.57],
        "std": [0.0097, 0.0134, 0.0126, 0.028, 0.030, 0.077, 0.497],
        "max": [0.41, 0.34, 0.21, 0.81, 0.79, 0.69, 1.0],
        "min": [-0.40, -0.32, -0.26, -0.87, -0.57, -0.60, 0.0],
        "q01": [-0.03, -0.04, -0.03, -0.08, -0.09, -0.2, 0.0],
        "q99": [0.03, 0.04, 0.04, 0.08, 0.09, 0.2, 1.0],
        "mask": [True, True, True, True, True, True, False],
    },
    "proprio": {
        "mean": [0.0] * 7, "std": [1.0] * 7, "max": [1.0] * 7, "min": [-1.0] * 7,
        "q01": [-0.5] * 7, "q99": [0.5] * 7,
    },
    "num_transitions": 2135463,
    "num_trajectories": 60064,
}


def test_from_openvla_single_dataset_needs_no_key_and_reads_every_field():
    stats = NormStats.from_openvla({"bridge_orig": BRIDGE})
    assert stats.source == "bridge_orig"
    assert stats.num_transitions == 2135463 and stats.num_trajectories == 60064
    act = stats["action"]
    np.testing.assert_array_equal(act.q01, BRIDGE["action"]["q01"])
    np.testing.assert_array_equal(act.max, BRIDGE["action"]["max"])
    assert act.mask.tolist() == BRIDGE["action"]["mask"]
    # "proprio" is the state; its mask defaults to all true
    assert stats["proprio"] is stats["state"]
    assert stats["state"].mask.all() and stats["state"].dim == 7


def test_from_openvla_several_datasets_requires_a_known_unnorm_key(tmp_path):
    two = {"bridge_orig": BRIDGE, "fractal20220817_data": BRIDGE}
    with pytest.raises(ValueError, match=r"pass unnorm_key.*bridge_orig.*fractal20220817_data"):
        NormStats.from_openvla(two)
    with pytest.raises(KeyError, match=r"unnorm_key 'droid'.*available keys.*bridge_orig.*fractal"):
        NormStats.from_openvla(two, unnorm_key="droid")
    path = tmp_path / "dataset_statistics.json"
    path.write_text(json.dumps(two))
    assert NormStats.from_openvla(path, unnorm_key="fractal20220817_data").source == "fractal20220817_data"
    assert NormStats.from_openvla(str(path), unnorm_key="bridge_orig").source == "bridge_orig"


def test_bounds_q99_matches_hand_computed_values_and_passes_masked_dims_through():
    act = NormStats.from_openvla({"b": BRIDGE})["action"]
    # dim 0: q01 -0.03, q99 0.03 -> x = 0.015 is 3/4 of the way -> 0.5; clipped beyond q99
    # dim 6 (gripper) is masked: passes through unchanged.
    x = np.array([0.015, 0.04, 0.005, 0.08, -1.0, 0.0, 0.3])
    n = act.normalize(x, "bounds_q99")
    np.testing.assert_allclose(n[0], 2 * (0.015 + 0.03) / (0.06 + 1e-8) - 1, rtol=0, atol=1e-12)
    assert abs(n[0] - 0.5) < 1e-6
    assert n[1] == pytest.approx(2 * 0.08 / (0.08 + 1e-8) - 1, abs=1e-12)  # = 1 - tiny
    assert n[3] == pytest.approx(1.0, abs=1e-6)  # x = q99
    assert n[4] == -1.0  # clipped
    assert n[5] == pytest.approx(0.0, abs=1e-7)
    assert n[6] == 0.3
    # OpenVLA's unnormalise: 0.5 (x + 1)(q99 - q01) + q01 on masked dims, no epsilon
    y = np.array([0.5, -1.0, 1.0, 0.0, 0.25, -0.5, 0.7])
    u = act.unnormalize(y, "bounds_q99")
    q01, q99 = np.array(BRIDGE["action"]["q01"]), np.array(BRIDGE["action"]["q99"])
    expected = 0.5 * (y + 1) * (q99 - q01) + q01
    expected[6] = 0.7
    np.testing.assert_array_equal(u, expected)
    assert u[0] == pytest.approx(0.015, abs=1e-15)
    assert u[1] == pytest.approx(-0.04, abs=1e-15)


def test_bounds_zeroes_dims_that_never_move():
    fs = FeatureStats(min=[0.0, 1.0], max=[2.0, 1.0], q01=[0.0, 1.0], q99=[2.0, 1.0])
    n = fs.normalize([[1.0, 1.0], [2.0, 5.0]], "bounds_q99")
    np.testing.assert_allclose(n, [[0.0, 0.0], [1.0, 0.0]], atol=1e-8)


def test_quantile_and_mean_std_follow_openpi_and_invert_exactly():
    raw = {"norm_stats": {
        "state": {"mean": [1.0, -2.0], "std": [2.0, 0.5], "q01": [-1.0, -3.0], "q99": [3.0, -1.0]},
        "actions": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                    "q01": [0.0, 0.0, 0.0], "q99": [1.0, 2.0, 4.0]},
    }}
    stats = NormStats.from_openpi(raw)
    assert set(stats.features) == {"state", "action"}
    s = np.array([1.0, -2.0])
    # quantile: (x - q01)/(q99 - q01 + 1e-6)*2 - 1; x = midpoint -> ~0
    np.testing.assert_allclose(stats.normalize("state", s, "quantile"),
                               (s - [-1, -3]) / (np.array([4.0, 2.0]) + 1e-6) * 2 - 1, rtol=0, atol=0)
    assert abs(stats.normalize("state", s, "quantile")[0]) < 1e-6
    np.testing.assert_allclose(stats.normalize("state", [5.0, -1.0], "mean_std"),
                               [4.0 / (2.0 + 1e-6), 1.0 / (0.5 + 1e-6)], rtol=0, atol=1e-15)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    for rule in ("quantile", "mean_std"):
        back = stats.unnormalize("actions", stats.normalize("actions", a, rule), rule)
        np.testing.assert_allclose(back, a, rtol=0, atol=1e-12)
    # quantile does not clip (openpi): x = q99 + range maps beyond 1
    assert stats.normalize("action", [2.0, 4.0, 8.0], "quantile")[0] == pytest.approx(3.0, abs=1e-5)


def test_our_json_round_trip_is_lossless(tmp_path):
    stats = NormStats.from_openvla({"bridge_orig": BRIDGE})
    path = tmp_path / "norm.json"
    text = stats.to_json(path)
    again = NormStats.from_json(path)
    assert again.source == "bridge_orig" and again.num_trajectories == 60064
    for key in ("action", "state"):
        for name in ("mean", "std", "min", "max", "q01", "q99", "mask"):
            np.testing.assert_array_equal(getattr(again[key], name), getattr(stats[key], name))
    assert NormStats.from_json(text).to_dict() == stats.to_dict()
    # and the published layouts come back out unchanged
    assert NormStats.from_openvla(stats.to_openvla()).to_dict() == stats.to_dict()


def test_openpi_stats_lack_min_max_so_bounds_rule_is_refused():
    stats = NormStats.from_openpi({"norm_stats": {"actions": {"mean": [0.0], "std": [1.0]}}})
    with pytest.raises(ValueError, match=r"'bounds_q99' needs statistics \['q01', 'q99'\]"):
        stats.unnormalize("action", [0.0], "bounds_q99")
    with pytest.raises(ValueError, match=r"unknown normalisation rule 'minmax'.*bounds_q99"):
        stats.normalize("action", [0.0], "minmax")


def test_shape_and_content_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'q99' has 2 entries, expected 3"):
        FeatureStats(q01=[0, 0, 0], q99=[1, 1])
    with pytest.raises(ValueError, match=r"mask has shape \(2,\), expected \(3,\)"):
        FeatureStats(q01=[0, 0, 0], q99=[1, 1, 1], mask=[True, False])
    with pytest.raises(ValueError, match=r"'std' must be >= 0"):
        FeatureStats(mean=[0.0], std=[-1.0])
    with pytest.raises(ValueError, match=r"non-finite"):
        FeatureStats(mean=[np.nan])
    fs = FeatureStats(q01=[0, 0, 0], q99=[1, 1, 1])
    with pytest.raises(ValueError, match=r"shape \(4,\) with 3-D statistics"):
        fs.normalize(np.zeros(4), "bounds_q99")
    with pytest.raises(KeyError, match=r"no normalisation statistics for 'state'; have \['action'\]"):
        NormStats({"action": fs})["state"]
    with pytest.raises(ValueError, match=r"b/action.*'q99' has 2 entries"):
        NormStats.from_openvla({"b": {"action": {"q01": [0, 0, 0], "q99": [1, 1]}}})
    with pytest.raises(ValueError, match=r"lack the 'action' entry"):
        NormStats.from_openvla({"b": {"proprio": {"q01": [0], "q99": [1]}}})
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        NormStats.from_openvla("/nonexistent/nowhere.json")
    with pytest.raises(ValueError, match=r"'format' is None"):
        NormStats.from_json('{"features": {}}')


def test_first_takes_the_leading_dims_of_padded_stats():
    fs = FeatureStats(q01=np.arange(32.0), q99=np.arange(32.0) + 2, mask=[True] * 31 + [False])
    head = fs.first(7)
    assert head.dim == 7 and head.mask.all()
    np.testing.assert_array_equal(head.q99, np.arange(7.0) + 2)
    with pytest.raises(ValueError, match="first 33 dims of 32-D"):
        fs.first(33)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0.01, 5), st.floats(0, 1), st.booleans()),
                min_size=1, max_size=8))
def test_property_bounds_q99_inverts_inside_the_range_and_masked_dims_pass(dims):
    q01 = np.array([d[0] for d in dims])
    q99 = q01 + np.array([d[1] for d in dims])
    mask = np.array([d[3] for d in dims])
    x = q01 + np.array([d[2] for d in dims]) * (q99 - q01)  # inside [q01, q99]
    fs = FeatureStats(q01=q01, q99=q99, mask=mask)
    n = fs.normalize(x, "bounds_q99")
    assert np.all(np.abs(n[mask]) <= 1.0)
    np.testing.assert_array_equal(n[~mask], x[~mask])
    np.testing.assert_allclose(fs.unnormalize(n, "bounds_q99"), x, rtol=0, atol=1e-6)
