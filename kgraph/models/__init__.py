"""kgraph.models: Model, Sequential and Functional."""

from kgraph.models.functional import Functional  # noqa: F401
from kgraph.models.model import Model  # noqa: F401
from kgraph.models.sequential import Sequential  # noqa: F401
