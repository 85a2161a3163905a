"""Train an MLP on scikit-learn's digits with kgraph, report test accuracy, save the model,
export it to ONNX and check onnxruntime gives the same predictions.

Run: python examples/train_digits.py [--epochs N] [--out digits_mlp.keras]
"""

import argparse
import time

import numpy as np
import onnxruntime
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kgraph as keras


def load_data(seed=0):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_model():
    return keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="digits_mlp.keras")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load_data()
    model = build_model()
    model.summary()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, validation_split=0.1, verbose=2)
    print(f"training took {time.time() - start:.1f} s")
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    predictions = model.predict(x_test, verbose=0)
    print(f"predict agrees with evaluate: {np.mean(predictions.argmax(-1) == y_test):.4f}")
    if hasattr(model, "save"):
        model.save(args.out)
        print(f"saved {args.out}")
    onnx_path = args.out.rsplit(".", 1)[0] + ".onnx"
    model.export(onnx_path, format="onnx")
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    onnx_predictions = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    print(f"onnxruntime vs kgraph predict: max abs difference {np.abs(onnx_predictions - predictions).max():.2e}, "
          f"accuracy {np.mean(onnx_predictions.argmax(-1) == y_test):.4f}")


if __name__ == "__main__":
    main()
