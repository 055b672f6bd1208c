"""Figures: the flow colour code and the synthetic-pair sheet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sschsr.viz import flow_to_color, pair_figure


def _uniform(dx: float, dy: float, size: int = 4) -> np.ndarray:
    return np.stack([np.full((size, size), dx), np.full((size, size), dy)])


def test_zero_flow_is_white():
    rgb = flow_to_color(np.zeros((2, 5, 7)))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert (rgb == 255).all()


def test_directions_have_the_documented_hues():
    # right: red; left: cyan (the opposite hue); full saturation at max_norm
    right = flow_to_color(_uniform(3.0, 0.0), max_norm=3.0)[0, 0].tolist()
    left = flow_to_color(_uniform(-3.0, 0.0), max_norm=3.0)[0, 0].tolist()
    assert right == [255, 0, 0]
    assert left == [0, 255, 255]
    # down (y grows downwards) is between red and green; up is blue-violet
    down = flow_to_color(_uniform(0.0, 3.0), max_norm=3.0)[0, 0]
    up = flow_to_color(_uniform(0.0, -3.0), max_norm=3.0)[0, 0]
    assert down[2] == 0 and down[0] > 0 and down[1] > 0
    assert up[2] == 255 and up[1] == 0


def test_saturation_grows_with_magnitude_and_darkens_beyond_max_norm():
    flow = np.concatenate(
        [_uniform(0.5, 0.0, 1), _uniform(1.0, 0.0, 1), _uniform(2.0, 0.0, 1), _uniform(9.0, 0.0, 1)], axis=2
    )  # (2, 1, 4): 0.5, 1, 2, 9 px to the right
    rgb = flow_to_color(flow, max_norm=2.0)[0].astype(int)
    # red stays full up to max_norm while green and blue fall: more saturation
    assert (rgb[:3, 0] == 255).all() and rgb[0, 1] > rgb[1, 1] > rgb[2, 1] == 0
    # 4.5 x max_norm: half value, still red
    assert rgb[3].tolist() == [128, 0, 0]


def test_default_max_norm_is_the_largest_magnitude_and_nan_is_zero():
    flow = np.concatenate([_uniform(4.0, 0.0, 1), _uniform(np.nan, 0.0, 1)], axis=2)
    rgb = flow_to_color(torch.from_numpy(flow))  # tensors are accepted
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("shape", [(3, 4, 4), (2, 4), (2, 4, 4, 1)])
def test_bad_flow_shape(shape):
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flow_to_color(np.zeros(shape))


def test_pair_figure_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 24, 32
    src = rng.random((3, h, w)).astype(np.float32)  # CHW float
    ref = (rng.random((h, w, 3)) * 255).astype(np.uint8)  # HWC uint8
    flow = rng.normal(0, 2, (2, h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.2
    out = pair_figure(
        torch.from_numpy(src), ref, flow, valid, ref, tmp_path / "sub" / "pair.png", title="a pair"
    )
    assert out == tmp_path / "sub" / "pair.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
    # written atomically: no temporary file left beside it
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["pair.png"]
