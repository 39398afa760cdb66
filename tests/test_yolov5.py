"""Tests of trtflow's built-in Keras YOLOv5 (architecture, decode, init, save/load)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

keras = pytest.importorskip("keras")
yolov5 = pytest.importorskip("trtflow.tf.yolov5")

from trtflow.core.errors import TrtflowError  # noqa: E402

# Trainable parameters (conv weights + biases + BN gamma/beta) of the v6.0/v7.0 COCO models.
PUBLISHED_PARAMS = {
    "n": 1_872_157,
    "s": 7_235_389,
    "m": 21_190_557,
    "l": 46_563_709,
    "x": 86_749_405,
}
SIZE, CLASSES = 128, 3


def _images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)


def _run(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Inference in eager mode (much faster than predict() for a one-off call)."""
    return np.asarray(model(images, training=False))


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights]


@functools.lru_cache(maxsize=1)
def _model_at_64(variant: str) -> keras.Model:
    return yolov5.build_yolov5(variant, 80, 64)


@pytest.fixture(scope="module")
def small() -> keras.Model:
    return yolov5.build_yolov5("n", CLASSES, SIZE, seed=0)


@pytest.fixture(scope="module")
def small_out(small: keras.Model) -> np.ndarray:
    return _run(small, _images(2, SIZE))


@pytest.mark.parametrize("variant", list(PUBLISHED_PARAMS))
def test_trainable_params_match_published(variant: str) -> None:
    model = _model_at_64(variant)
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert abs(count - PUBLISHED_PARAMS[variant]) / PUBLISHED_PARAMS[variant] < 0.01, count


def _scenes(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Image-like inputs: the generated scenes the init is calibrated on (other seeds)."""
    from trtflow.images.scenes import scene

    rng = np.random.default_rng(seed + 1000)
    return np.stack([scene(rng, size, size) for _ in range(batch)]).astype(np.float32) / 255


@pytest.mark.parametrize(("variant", "size"), [("x", 320), ("s", 640)])
def test_activations_stay_sane_on_images(variant: str, size: int) -> None:
    model = yolov5.build_yolov5(variant, 80, size)
    acts = [layer.output for layer in model.layers if layer.name.endswith(".act")]
    heads = [layer.output for layer in model.layers if layer.name.startswith("model.24.m.")]
    probe = keras.Model(model.input, acts + heads)
    values = [np.asarray(a) for a in probe(_scenes(2, size), training=False)]
    stds = np.array([v.std() for v in values[: len(acts)]])
    assert np.isfinite(stds).all()
    # Neither vanishing nor growing through the 100+ convs of x (a fresh BN is an identity), and
    # small enough for SiLU's near-linear range — on image-like inputs at the sizes users run.
    assert 0.01 < stds.min() and stds.max() < 0.4, (stds.min(), stds.max())
    assert max(np.abs(v).max() for v in values[: len(acts)]) < 4
    # Detect's logits stay near their calibrated spread (white-noise calibration let them reach
    # std 6 and saturate every sigmoid at 640).
    head_stds = [v.std() for v in values[len(acts) :]]
    assert max(head_stds) < 3 * yolov5._HEAD_STD, head_stds


def test_deepest_variant_is_well_conditioned() -> None:
    # Not chaotic: a tiny input change barely moves the boxes, another image moves them a lot
    # (float32 rounding differences between runtimes are such tiny changes).
    model = _model_at_64("x")
    image = _images(1, 64, seed=1)
    nudge = np.random.default_rng(2).uniform(-1e-4, 1e-4, image.shape).astype(np.float32)
    base = _run(model, image)
    nudged = np.abs(_run(model, image + nudge) - base)[..., :4].max()
    other = np.abs(_run(model, _images(1, 64, seed=3)) - base)[..., :4].mean()
    assert nudged < 0.5 and other > 1.0, (nudged, other)


def test_io_contract(small: keras.Model, small_out: np.ndarray) -> None:
    assert small.input.name == "images"
    assert tuple(small.input.shape) == (None, SIZE, SIZE, 3)
    assert tuple(small.output.shape) == (None, yolov5.num_predictions(SIZE), 5 + CLASSES)
    assert small_out.shape == (2, 3 * (16 * 16 + 8 * 8 + 4 * 4), 5 + CLASSES)
    assert small_out.dtype == np.float32
    # Graph mode with another batch size: the batch is dynamic, and the result agrees within the
    # parity stage's default tolerance (the init does not amplify float32 rounding).
    graph = small.predict(_images(3, SIZE), verbose=0)
    assert graph.shape == (3, *small_out.shape[1:])
    np.testing.assert_allclose(graph[:2], small_out, rtol=1e-4, atol=1e-3)


def test_inference_without_training_flag(small: keras.Model, small_out: np.ndarray) -> None:
    # No layer may switch the BatchNorms into training mode when training= is not given.
    np.testing.assert_array_equal(np.asarray(small(_images(2, SIZE))), small_out)


def test_num_predictions() -> None:
    assert yolov5.num_predictions(640) == 25200
    assert yolov5.num_predictions(32) == 3 * (16 + 4 + 1)


def test_decode_is_sane(small_out: np.ndarray) -> None:
    assert np.isfinite(small_out).all()
    xy, wh, scores = small_out[..., :2], small_out[..., 2:4], small_out[..., 4:]
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (wh > 0).all() and (wh <= 4 * max(max(a) for a in yolov5.ANCHORS)).all()
    half = max(yolov5.STRIDES) / 2
    assert (xy >= -half).all() and (xy <= SIZE + half).all()
    # The input matters: two images give different scores.
    assert np.abs(scores[0] - scores[1]).max() > 1e-3


def _reference_decode(raws: list[np.ndarray], size: int) -> np.ndarray:
    """YOLOv5's Detect in its PyTorch layout: view(bs, na, no, ny, nx) -> (bs, na, ny, nx, no)."""
    out = []
    for raw, stride, anchors in zip(raws, yolov5.STRIDES, yolov5.ANCHORS, strict=True):
        bs, ny, nx, _ = raw.shape
        p = raw.transpose(0, 3, 1, 2).reshape(bs, 3, -1, ny, nx).transpose(0, 1, 3, 4, 2)
        s = 1 / (1 + np.exp(-p.astype(np.float64)))
        gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack([gx, gy], -1)[None, None]
        anchor = np.asarray(anchors, np.float64).reshape(1, 3, 1, 1, 2)
        xy = (s[..., :2] * 2 - 0.5 + grid) * stride
        wh = (s[..., 2:4] * 2) ** 2 * anchor
        out.append(np.concatenate([xy, wh, s[..., 4:]], -1).reshape(bs, -1, p.shape[-1]))
    return np.concatenate(out, 1)


def test_decode_matches_ultralytics_layout() -> None:
    size, no = 64, 5 + CLASSES
    rng = np.random.default_rng(3)
    raws = [
        rng.normal(0, 2, (2, size // s, size // s, 3 * no)).astype(np.float32) for s in (8, 16, 32)
    ]
    got = keras.ops.convert_to_numpy(yolov5.YoloDecode(CLASSES, (size, size))(raws))
    np.testing.assert_allclose(got, _reference_decode(raws, size), rtol=1e-5, atol=1e-4)


def test_detect_bias_prior(small: keras.Model) -> None:
    bias = keras.ops.convert_to_numpy(small.get_layer("model.24.m.2").bias).reshape(3, -1)
    np.testing.assert_allclose(bias[:, 4], np.log(8 / (640 / 32) ** 2), rtol=1e-6)
    np.testing.assert_allclose(bias[:, 5:], np.log(0.6 / (CLASSES - 0.99)), rtol=1e-6)


def test_same_seed_is_bit_identical_other_seed_differs(
    small: keras.Model, small_out: np.ndarray
) -> None:
    again = yolov5.build_yolov5("n", CLASSES, SIZE, seed=0)
    for a, b in zip(_weights(small), _weights(again), strict=True):
        assert np.array_equal(a, b)
    np.testing.assert_array_equal(_run(again, _images(2, SIZE)), small_out)

    other = yolov5.build_yolov5("n", CLASSES, SIZE, seed=1)
    kernels = [w for w, v in zip(_weights(other), other.weights, strict=True) if "kernel" in v.path]
    ref = [w for w, v in zip(_weights(small), small.weights, strict=True) if "kernel" in v.path]
    assert all(not np.array_equal(a, b) for a, b in zip(kernels, ref, strict=True))
    assert not np.allclose(_run(other, _images(2, SIZE)), small_out)


@pytest.mark.parametrize("size", [300, 16, 100])
def test_image_size_must_be_multiple_of_32(size: int) -> None:
    with pytest.raises(TrtflowError, match="not a multiple of 32"):
        yolov5.build_yolov5("n", CLASSES, size)
    with pytest.raises(TrtflowError):
        yolov5.num_predictions(size)


def test_image_size_error_suggests_neighbours() -> None:
    with pytest.raises(TrtflowError) as info:
        yolov5.build_yolov5("n", CLASSES, 300)
    assert info.value.fix == "use 288 or 320"


def test_unknown_variant_and_bad_classes() -> None:
    with pytest.raises(TrtflowError, match="variant"):
        yolov5.build_yolov5("q")
    with pytest.raises(TrtflowError, match="classes"):
        yolov5.build_yolov5("n", 0)


def test_keras_file_round_trip_in_safe_mode(small: keras.Model, small_out: np.ndarray, tmp_path):
    path = tmp_path / "yolov5n.keras"
    small.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("output0"), yolov5.YoloDecode)
    np.testing.assert_array_equal(_run(loaded, _images(2, SIZE)), small_out)


def test_weights_file_round_trip(small: keras.Model, small_out: np.ndarray, tmp_path) -> None:
    path = tmp_path / "yolov5n.weights.h5"
    small.save_weights(path)
    loaded = yolov5.build_yolov5("n", CLASSES, SIZE, seed=7, weights=str(path))
    np.testing.assert_array_equal(_run(loaded, _images(2, SIZE)), small_out)

    with pytest.raises(TrtflowError, match="does not fit"):
        yolov5.build_yolov5("n", CLASSES + 1, 32, weights=str(path))


def test_missing_weights_file_names_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(TrtflowError, match="nope.weights.h5"):
        yolov5.build_yolov5("n", CLASSES, SIZE, weights=str(missing))
