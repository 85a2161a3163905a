"""Unique object names in Keras's style: dense, dense_1, dense_2, ..."""

import collections
import re

_counts = collections.defaultdict(int)


def to_snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()  # as Keras: Conv2D -> conv2d


def uniquify(base):
    count = _counts[base]
    _counts[base] += 1
    return base if count == 0 else f"{base}_{count}"


def auto_name(cls_or_obj):
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    return uniquify(to_snake_case(cls.__name__))
