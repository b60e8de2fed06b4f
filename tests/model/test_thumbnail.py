"""The analysis reads a photo only through its 256 px thumbnail, so the thumbnail gets the photo's correction."""

import numpy as np

from model.corrector import Corrector
from model.stats import CLIP_LEVEL, THUMBNAIL_SIZE, thumbnail
from tests.conftest import load_rgb, wild_photos


def test_a_photo_and_its_thumbnail_get_the_same_correction():
    corrector = Corrector.from_checkpoint()
    for path in wild_photos():
        photo = load_rgb(path)
        thumb = thumbnail(photo)
        assert max(thumb.shape[:2]) <= THUMBNAIL_SIZE
        own, from_thumb = corrector.estimate(photo), corrector.estimate(thumb)
        np.testing.assert_array_equal(own.matrix, from_thumb.matrix, err_msg=path.name)
        assert own.white_distance == from_thumb.white_distance


def test_clipped_blocks_are_painted_white_and_only_they():
    photo = np.full((512, 768, 3), 120, np.uint8)
    photo[5, 7] = (CLIP_LEVEL, 10, 10)  # one clipped pixel in block (1, 2) of the 3 x 3 blocks
    thumb = thumbnail(photo)
    assert thumb.shape == (170, 256, 3)
    assert (thumb[1, 2] == 255).all()
    thumb[1, 2] = 120
    assert (thumb == 120).all()
