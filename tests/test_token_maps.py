"""The token picture: panels in order (image, one code map per level, reconstruction),
one palette colour per code."""

import numpy as np

from tapkit.utils.overlay import palette
from tapkit.utils.token_maps import code_map_rgb, draw_token_maps


def test_code_map_colours_are_the_palette():
    codes = np.array([[0, 1], [2, 1]])
    rgb = code_map_rgb(codes, 3)
    colours = palette(3)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == colours[0] and tuple(rgb[0, 1]) == tuple(rgb[1, 1]) == colours[1]
    assert tuple(rgb[1, 0]) == colours[2]


def test_panels_side_by_side():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)
    maps = [np.zeros((8, 8), int), np.ones((4, 4), int)]
    recon = np.full((16, 16, 3), 7, np.uint8)
    out = np.asarray(draw_token_maps(image, maps, [4, 4], recon, height=64))
    # image panel 128 wide, two square code maps, a square reconstruction, 6 px gaps
    assert out.shape[1] == 128 + 64 + 64 + 64 + 3 * 6 and out.shape[0] > 64
    assert tuple(out[10, 128 + 6 + 10]) == palette(4)[0]
    assert tuple(out[10, 128 + 6 + 64 + 6 + 10]) == palette(4)[1]
    assert tuple(out[10, -10]) == (7, 7, 7)
