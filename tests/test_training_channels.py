"""Training images are channel-matched to the first one, by the one rule of pixlab.image.channels."""

import numpy as np
import pytest

from pixlab.image.image import Image
from pixlab.training.config import TrainConfig
from pixlab.training.samples import prepare_samples


def _pair(names, seed=0, name="img"):
    rng = np.random.default_rng(seed)
    data = rng.random((len(names), 32, 32)).astype(np.float32)
    lab = np.zeros((32, 32), np.uint8)
    lab[2:6, 2:6], lab[20:24, 20:24] = 1, 2
    return Image(data, channel_names=names, name=name), lab


def test_second_image_is_reordered_to_the_first_ones_channel_order():
    (a, la), (b, lb) = _pair(["DAPI", "CD3", "CD8"], 0, "a"), _pair(["CD8", "DAPI", "CD3"], 1, "b")
    with pytest.warns(UserWarning, match=r"training image 'b' .* another order .* reordered by name"):
        images, _, _ = prepare_samples([(a, la), (b, lb)], TrainConfig(), ["bg", "fg"])
    assert [im.channel_names for im in images] == [["DAPI", "CD3", "CD8"]] * 2
    raw = b.read()
    np.testing.assert_array_equal(images[1].read(), raw[[1, 2, 0]])  # the data moved with the names


def test_same_order_says_nothing(recwarn):
    prepare_samples([_pair(["DAPI", "CD3"], 0), _pair(["DAPI", "CD3"], 1)], TrainConfig(), ["bg", "fg"])
    assert not [w for w in recwarn if "order" in str(w.message)]


def test_different_names_are_one_clear_error():
    with pytest.raises(ValueError, match=r"image 'b' .*\['DAPI', 'CD4'\].*training image 'a'.*\['CD3'\] not found "
                                         r"by name; select the same channels in every image"):
        prepare_samples([_pair(["DAPI", "CD3"], 0, "a"), _pair(["DAPI", "CD4"], 1, "b")], TrainConfig(),
                        ["bg", "fg"])


def test_different_counts_are_one_clear_error():
    # b holds every channel of a: still an error, not a silent subset of what b was labelled on
    with pytest.raises(ValueError, match=r"different channel counts \[2, 3\].*'b': \['CD3', 'DAPI', 'CD8'\]"
                                         r".*select the same channels"):
        prepare_samples([_pair(["DAPI", "CD3"], 0, "a"), _pair(["CD3", "DAPI", "CD8"], 1, "b")], TrainConfig(),
                        ["bg", "fg"])


@pytest.mark.filterwarnings("ignore::pixlab.training.health.TrainingQualityWarning")  # 1 epoch: quality is not the point
def test_train_returns_a_model_with_the_first_images_channels():
    import pixlab
    cfg = TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=32, epochs=1, patches_per_epoch=2,
                      batch_size=2)
    with pytest.warns(UserWarning, match="reordered by name"):
        model = pixlab.train([_pair(["DAPI", "CD3"], 0, "a"), _pair(["CD3", "DAPI"], 1, "b")], cfg,
                             class_names=["bg", "fg"])
    assert model.channel_names == ["DAPI", "CD3"]
