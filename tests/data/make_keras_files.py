"""Write the Keras 3 `.keras` files that tests/test_saving.py loads in kgraph.

Run with Keras 3 (not kgraph), e.g.:

    python3 -m venv kerasenv && kerasenv/bin/pip install keras numpy h5py scipy jax
    KERAS_BACKEND=jax kerasenv/bin/python tests/data/make_keras_files.py

For every model NAME it writes into tests/data/keras3/:
    NAME.keras            the model, saved by Keras (model.save)
    NAME_input_I.npy      the I-th input array
    NAME_output_I.npy     Keras's prediction for the I-th output
Models trained before saving (their files hold optimizer state) also get
    NAME_target.npy       the training targets
    NAME_after.npy        all the model's weights, flattened and concatenated, after Keras
                          continued training for TRAIN_EPOCHS more full-batch epochs on
                          (inputs, target) from the saved state (kgraph must match it)
Training needs a backend that trains (jax, tensorflow or torch; the numpy backend only
predicts), so the trained models are skipped under KERAS_BACKEND=numpy.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras3")
TRAIN_EPOCHS = 3


def flat_weights(model):
    return np.concatenate([np.asarray(w, dtype="float64").ravel() for w in model.get_weights()])


def save(name, model, inputs, target=None, optimizer=None, loss="mse"):
    if target is not None:
        model.compile(optimizer=optimizer, loss=loss)
        model.fit(inputs, target, batch_size=len(target), epochs=2, shuffle=False, verbose=0)
    path = os.path.join(OUT, f"{name}.keras")
    model.save(path)
    outputs = model.predict(inputs, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for i, x in enumerate(inputs if isinstance(inputs, list) else [inputs]):
        np.save(os.path.join(OUT, f"{name}_input_{i}.npy"), x)
    for i, y in enumerate(outputs):
        np.save(os.path.join(OUT, f"{name}_output_{i}.npy"), np.asarray(y))
    if target is not None:
        np.save(os.path.join(OUT, f"{name}_target.npy"), target)
        model.fit(inputs, target, batch_size=len(target), epochs=TRAIN_EPOCHS, shuffle=False, verbose=0)
        np.save(os.path.join(OUT, f"{name}_after.npy"), flat_weights(model))
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)
    keras.utils.set_random_seed(1234)
    rng = np.random.default_rng(0)
    trains = keras.backend.backend() != "numpy"

    # A Sequential MLP, compiled with a loss object and metrics.
    mlp = keras.Sequential([
        keras.Input((8,)),
        layers.Dense(16, activation="relu"),
        layers.Dense(16, activation="tanh"),
        layers.Dense(3, activation="softmax"),
    ], name="mlp")
    mlp.compile(optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"])
    save("sequential_mlp", mlp, rng.standard_normal((5, 8)).astype("float32"))

    # A Functional model with two inputs, every merge layer and two outputs.
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    ha = layers.Dense(7, activation="relu", name="ha")(a)
    hb = layers.Dense(7, activation="sigmoid", name="hb")(b)
    merged = layers.Concatenate(name="concat")([
        layers.Add()([ha, hb]), layers.Subtract()([ha, hb]), layers.Multiply()([ha, hb]),
        layers.Average()([ha, hb]), layers.Maximum()([ha, hb]), layers.Minimum()([ha, hb]),
    ])
    first = layers.Dense(2, name="first")(merged)
    second = layers.Dense(4, activation="softmax", name="second")(layers.Concatenate(axis=1)([merged, ha]))
    two = keras.Model([a, b], [first, second], name="two_inputs")
    save("functional_two_inputs", two,
         [rng.standard_normal((4, 6)).astype("float32"), rng.standard_normal((4, 6)).astype("float32")])

    # Core layers: Flatten, Reshape, Activation, Dropout, Identity, a shared layer.
    x = keras.Input((3, 4), name="image")
    h = layers.Flatten()(x)
    h = layers.Dense(12, use_bias=False)(h)
    h = layers.Reshape((2, 6))(h)
    h = layers.Activation("relu")(h)
    h = layers.Dropout(0.5)(h)
    h = layers.Flatten()(h)
    shared = layers.Dense(12, activation="tanh", name="shared")
    h = shared(shared(h))
    h = layers.Identity()(h)
    out = layers.Dense(5, activation="sigmoid")(h)
    core = keras.Model(x, out, name="core_layers")
    save("core_layers", core, rng.standard_normal((6, 3, 4)).astype("float32"))

    # Nested models: a Sequential and a Functional model used as layers.
    inner_seq = keras.Sequential([keras.Input((4,)), layers.Dense(5, activation="relu")], name="inner_seq")
    i = keras.Input((5,))
    inner_fn = keras.Model(i, layers.Dense(3)(i), name="inner_fn")
    x = keras.Input((4,), name="x")
    nested = keras.Model(x, layers.Add()([inner_fn(inner_seq(x)), layers.Dense(3)(x)]), name="nested")
    save("nested_models", nested, rng.standard_normal((3, 4)).astype("float32"))

    if not trains:
        print("skipped the trained models: the numpy backend cannot train", file=sys.stderr)
        return
    # Trained models: the files hold optimizer state that kgraph must resume from.
    for name, optimizer in [("trained_sgd", keras.optimizers.SGD(0.05, momentum=0.9)),
                            ("trained_adam", keras.optimizers.Adam(0.01)),
                            ("trained_rmsprop", keras.optimizers.RMSprop(0.01, momentum=0.5))]:
        model = keras.Sequential([keras.Input((5,)), layers.Dense(6, activation="relu"), layers.Dense(2)],
                                 name=name)
        inputs = rng.standard_normal((16, 5)).astype("float32")
        target = rng.standard_normal((16, 2)).astype("float32")
        save(name, model, inputs, target=target, optimizer=optimizer)
    # Optimizers added later (their own generator, so the files above stay as they were).
    rng = np.random.default_rng(1)
    for name, optimizer in [("trained_nadam", keras.optimizers.Nadam(0.01)),
                            ("trained_adamax", keras.optimizers.Adamax(0.01)),
                            ("trained_lion", keras.optimizers.Lion(0.001, weight_decay=0.01)),
                            ("trained_adamw", keras.optimizers.AdamW(0.01))]:
        model = keras.Sequential([keras.Input((5,)), layers.Dense(6, activation="relu"), layers.Dense(2)],
                                 name=name)
        inputs = rng.standard_normal((16, 5)).astype("float32")
        target = rng.standard_normal((16, 2)).astype("float32")
        save(name, model, inputs, target=target, optimizer=optimizer)
    save_layer_models(np.random.default_rng(2))


def save_layer_models(rng):
    """Convolution, recurrent and attention layers: Keras's weight layouts, loaded by kgraph."""
    image = keras.Input((12, 12, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.DepthwiseConv2D(3, depth_multiplier=2)(h)
    h = layers.SeparableConv2D(5, 3, padding="same", activation="tanh")(h)
    h = layers.Conv2DTranspose(3, 3, strides=2)(h)
    h = layers.UpSampling2D(2)(h)
    h = layers.AveragePooling2D(3, strides=2, padding="same")(h)
    h = layers.ZeroPadding2D(1)(h)
    h = layers.Cropping2D(((1, 0), (0, 2)))(h)
    pooled = layers.GlobalAveragePooling2D()(h)
    series = keras.Input((10, 4))
    s = layers.Conv1D(6, 3, dilation_rate=2, activation="relu")(series)
    s = layers.MaxPooling1D(2)(s)
    s = layers.Conv1DTranspose(4, 3, strides=2)(s)
    s = layers.GlobalMaxPooling1D()(s)
    out = layers.Dense(3)(layers.Concatenate()([pooled, s]))
    model = keras.Model([image, series], out, name="conv_layers")
    save("conv_layers", model, [rng.standard_normal((2, 12, 12, 3)).astype("float32"),
                                rng.standard_normal((2, 10, 4)).astype("float32")])

    tokens = keras.Input((7,), dtype="int32")
    e = layers.Embedding(20, 6, mask_zero=True)(tokens)
    r = layers.Bidirectional(layers.LSTM(5, return_sequences=True))(e)
    r = layers.GRU(4, return_sequences=True)(r)
    r2 = layers.GRU(3, reset_after=False, go_backwards=True)(r)
    r1 = layers.SimpleRNN(3)(r)
    out = layers.Dense(2)(layers.Concatenate()([r1, r2]))
    model = keras.Model(tokens, out, name="recurrent_layers")
    ids = rng.integers(1, 20, (3, 7)).astype("int32")
    ids[0, 5:] = 0  # padding at the end: masked steps
    ids[1, 3:] = 0
    save("recurrent_layers", model, ids)

    seq = keras.Input((5, 8))
    a = layers.MultiHeadAttention(num_heads=2, key_dim=4)(seq, seq)
    a = layers.LayerNormalization()(layers.Add()([seq, a]))
    out = layers.Dense(3)(layers.GlobalAveragePooling1D()(a))
    model = keras.Model(seq, out, name="attention_layers")
    save("attention_layers", model, rng.standard_normal((2, 5, 8)).astype("float32"))


if __name__ == "__main__":
    main()
