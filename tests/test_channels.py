"""Channel matching between an image and a model (pixlab.image.channels): by name, by position, or chosen."""

import warnings

import numpy as np
import pytest
import torch

import pixlab
from pixlab.image.channels import is_generic, match_channels, parse_channels
from pixlab.image.image import Image
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model


def image(names, n=None):
    n = len(names) if names is not None else n
    data = np.stack([np.full((8, 8), i + 1, np.uint16) for i in range(n)])  # channel i holds i + 1
    return Image(data, names)


def firsts(img):
    return [int(np.asarray(img.read())[c, 0, 0]) for c in range(img.n_channels)]


@pytest.mark.parametrize("name, generic", [
    ("Channel 1", True), ("channel_2", True), ("C0", True), ("Ch3", True), ("Channel:0:1", True), ("0", True),
    ("Red", True), ("Blue", True), ("", True),
    ("DAPI", False), ("CD3", False), ("Cy5", False), ("Membrane", False), ("Opal 520", False)])
def test_generic_names_are_the_ones_readers_make_up(name, generic):
    assert is_generic(name) is generic


def test_informative_names_are_reordered_to_the_models_order():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a match by name is no guess: no warning
        got = match_channels(image(["CD3", "DAPI"]), ["DAPI", "CD3"])
    assert got.channel_names == ["DAPI", "CD3"] and firsts(got) == [2, 1]


def test_names_are_matched_ignoring_case_and_a_subset_is_taken():
    got = match_channels(image(["cd8", "dapi", "CD3"]), ["DAPI", "CD3"])
    assert firsts(got) == [2, 3]


def test_a_missing_name_is_an_error_naming_what_the_image_has_and_how_to_map():
    with pytest.raises(ValueError) as e:
        match_channels(image(["DAPI", "CD8"]), ["DAPI", "CD3"])
    msg = str(e.value)
    assert "['DAPI', 'CD8']" in msg and "['CD3'] not found" in msg
    assert "channels=['DAPI', 'CD8']" in msg and "--channels DAPI,CD8" in msg and "\n" not in msg


def test_generic_names_are_matched_by_position_with_a_warning():
    with pytest.warns(UserWarning, match=r"by position \(Channel 1 as DAPI, Channel 2 as CD3\)"):
        got = match_channels(image(None, 2), ["DAPI", "CD3"])
    assert firsts(got) == [1, 2]


def test_identical_names_need_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert firsts(match_channels(image(None, 2), ["Channel 1", "Channel 2"])) == [1, 2]


def test_a_different_count_is_an_error_even_when_a_name_fits():
    # The 3-channel array used to be predicted from its channel 0 ("Channel 1") without a word.
    with pytest.raises(ValueError, match=r"has 3 channel\(s\) .* but the model expects 1 channel\(s\) "
                                         r"\['Channel 1'\]; choose .* channels=\[0\]"):
        match_channels(image(None, 3), ["Channel 1"])


@pytest.mark.parametrize("channels, expected", [
    ([2, 0], [3, 1]), (["Channel 3", "Channel 1"], [3, 1]), ({"CD3": 0, "DAPI": "Channel 3"}, [3, 1]),
])
def test_the_caller_selects_or_maps_channels(channels, expected):
    assert firsts(match_channels(image(None, 3), ["DAPI", "CD3"], channels)) == expected


def test_a_selection_of_the_wrong_length_is_an_error():
    with pytest.raises(ValueError, match=r"selects 1 channel\(s\) but the model expects 2"):
        match_channels(image(None, 3), ["DAPI", "CD3"], [0])


def test_parse_channels():
    assert parse_channels("DAPI,CD8") == ["DAPI", "CD8"]
    assert parse_channels("0, 2") == [0, 2]
    assert parse_channels("CD3=CD8,DAPI=0") == {"CD3": "CD8", "DAPI": 0}
    with pytest.raises(ValueError, match="empty entry"):
        parse_channels("DAPI,,CD8")


def test_model_predict_uses_the_match_and_the_selection():
    from pixlab.nn.networks import build_network
    torch.manual_seed(0)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard", device="cpu")
    stats = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [10.0, 10.0], "clip": None}
    model = Model(build_network("tiny_unet", None, in_channels=2, n_classes=2), ["a", "b"], default_colours(2),
                  ["DAPI", "CD3"], stats, cfg)
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 10, (2, 64, 64)).astype(np.float32)
    ref = model.predict(Image(data, ["DAPI", "CD3"]))
    np.testing.assert_allclose(model.predict(Image(data[::-1].copy(), ["CD3", "DAPI"])), ref, atol=1e-6)
    three = Image(np.concatenate([data[1:], rng.uniform(0, 10, (1, 64, 64)).astype(np.float32), data[:1]]))
    with pytest.raises(ValueError, match="has 3 channel"):
        model.predict(three)
    np.testing.assert_allclose(model.predict(three, channels=[2, 0]), ref, atol=1e-6)
