"""AdaptiveAveragePooling1D/2D/3D and AdaptiveMaxPooling1D/2D/3D: outputs against a numpy
reference written from the definition (PyTorch's windows), Keras 3's arguments and configs,
and one compiled model (predict) for each mode.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers

CLASSES = {(mode, rank): getattr(layers, f"Adaptive{mode}Pooling{rank}D")
           for mode in ("Average", "Max") for rank in (1, 2, 3)}


def _reference(x, size, mode, channels_first):
    """Cell i of an axis of length L pools x[floor(i L / out) : ceil((i + 1) L / out)]."""
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    reduce = np.mean if mode == "Average" else np.max
    spatial = x.shape[1:-1]
    out = np.zeros((x.shape[0],) + tuple(size) + (x.shape[-1],), x.dtype)
    for cell in itertools.product(*[range(s) for s in size]):
        window = tuple(slice(i * n // s, -(-(i + 1) * n // s)) for i, n, s in zip(cell, spatial, size))
        out[(slice(None),) + cell] = reduce(x[(slice(None),) + window].reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return np.moveaxis(out, -1, 1) if channels_first else out


SPATIAL = {1: (7,), 2: (5, 8), 3: (3, 5, 4)}
SIZES = {1: (3,), 2: (2, 3), 3: (2, 2, 3)}


@pytest.mark.parametrize("mode, rank", sorted(CLASSES))
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_eager_output_matches_numpy(mode, rank, data_format):
    shape = (2, 3) + SPATIAL[rank] if data_format == "channels_first" else (2,) + SPATIAL[rank] + (3,)
    x = np.random.default_rng(rank).standard_normal(shape).astype(np.float32)
    layer = CLASSES[mode, rank](SIZES[rank], data_format=data_format)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y, _reference(x, SIZES[rank], mode, data_format == "channels_first"), rtol=1e-6,
                               atol=1e-6)
    assert tuple(layer.compute_output_shape((None,) + shape[1:])) == (None,) + y.shape[1:]


@pytest.mark.parametrize("mode, rank", sorted(CLASSES))
def test_config_round_trip_and_keras_arguments(mode, rank):
    cls = CLASSES[mode, rank]
    layer = cls(4, data_format="channels_first", name="pool")
    config = layer.get_config()
    assert config["output_size"] == (4,) * rank and config["data_format"] == "channels_first"
    assert config["name"] == "pool"
    clone = cls.from_config(config)
    assert clone.output_size == (4,) * rank and clone.data_format == "channels_first"
    assert cls(3).data_format == "channels_last"
    with pytest.raises(TypeError, match=f"{cls.__name__}: `output_size`"):
        cls((2,) * (rank + 1))


@pytest.mark.parametrize("mode", ["Average", "Max"])
def test_compiled_model_matches_numpy(mode):
    model = keras.Sequential([keras.Input((9, 7, 2)), CLASSES[mode, 2]((4, 3))])
    x = np.random.default_rng(1).standard_normal((5, 9, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), _reference(x, (4, 3), mode, False), rtol=1e-6,
                               atol=1e-6)
