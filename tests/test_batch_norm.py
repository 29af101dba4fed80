"""Precise batch norm: after re-estimation, inference mode sees what training mode saw."""

import numpy as np
import pytest

pytestmark = pytest.mark.training
pytest.importorskip("tensorflow", reason="training needs the [train] extra (tensorflow-cpu)")

import keras  # noqa: E402

from station.training.batch_norm import recalibrate_batch_norm  # noqa: E402


def small_net() -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def test_recalibration_makes_inference_match_batch_statistics():
    keras.utils.set_random_seed(1)
    model = small_net()
    batch = np.random.default_rng(2).uniform(3.0, 5.0, (32, 16, 16, 1)).astype(np.float32)
    training_mode = model(batch, training=True).numpy()
    stale = model(batch, training=False).numpy()
    assert not np.allclose(stale, training_mode, atol=1e-2), "fresh moving stats are 0 and 1"

    recalibrate_batch_norm(model, [batch, batch])
    assert np.allclose(model(batch, training=False).numpy(), training_mode, atol=1e-2)
    bn = model.layers[2]
    assert bn.momentum == 0.9, "the layer's own momentum is restored"


def test_recalibration_averages_the_batches():
    model = small_net()
    rng = np.random.default_rng(3)
    low = rng.uniform(0.0, 1.0, (8, 16, 16, 1)).astype(np.float32)
    high = low + 10.0
    recalibrate_batch_norm(model, [low, high])
    bn = model.layers[2]
    conv = keras.Model(model.input, model.layers[1].output)
    means = [conv(x).numpy().mean(axis=(0, 1, 2)) for x in (low, high)]
    expected = (means[0] + means[1]) / 2
    assert np.allclose(bn.moving_mean.numpy(), expected, rtol=1e-3, atol=1e-4)
