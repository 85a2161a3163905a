"""kgraph.callbacks: hooks that fit/evaluate/predict call in Python between compiled steps."""

from kgraph.callbacks.backup_and_restore import BackupAndRestore  # noqa: F401
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
from kgraph.callbacks.tensorboard import TensorBoard  # noqa: F401
