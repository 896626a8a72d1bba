"""segjax.plots: the one class palette (dataset standards, distinct colours below 256 classes) and its colouring."""

import numpy as np

from segjax import plots


def test_dataset_palettes_are_the_standard_ones():
    voc = plots.palette(21, "voc_2012")
    assert voc[0].tolist() == [0, 0, 0] and voc[1].tolist() == [128, 0, 0] and voc[15].tolist() == [192, 128, 128]
    assert plots.palette(19, "cityscapes")[0].tolist() == [128, 64, 128]  # road
    assert plots.palette(11, "camvid")[0].tolist() == [128, 128, 128]  # sky
    assert len({tuple(c) for c in plots.voc_colours(256)}) == 256


def test_the_default_palette_never_repeats_below_256_classes():
    colours = plots.palette(255)
    assert colours.shape == (255, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 255
    assert colours[:10].tolist() == [list(c) for c in plots.FIRST_COLOURS]
    assert plots.palette(3, "oxford_iiit_pet").tolist() == colours[:3].tolist()


def test_colourise_draws_ignored_pixels_white():
    labels = np.array([[0, 1], [255, 2]])
    out = plots.colourise(labels, plots.palette(3))
    assert out[1, 0].tolist() == list(plots.IGNORE_COLOUR)
    assert out[0, 1].tolist() == plots.palette(3)[1].tolist()
