"""kgraph.callbacks: hooks that fit/evaluate/predict call in Python between compiled steps."""

from kgraph.callbacks.base import Callback, CallbackList, History, ProgbarLogger  # noqa: F401
from kgraph.callbacks.standard import (  # noqa: F401
                                       CSVLogger,
                                       EarlyStopping,
                                       LambdaCallback,
                                       LearningRateScheduler,
                                       ModelCheckpoint,
                                       ReduceLROnPlateau,
                                       TerminateOnNaN,
)
