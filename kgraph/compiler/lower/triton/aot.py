"""Ahead-of-time compilation of generated kernels for real GPUs, without a GPU.

`kernel_specs(executable, batches)` lists each launch of a compiled graph as the GPU
would run it (pointer types, block sizes, warps and stages; every matmul configuration
the runtime may pick), and `compile_specs(specs, targets)` compiles them with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))` down to PTX and
cubin. It must run in a process that does not interpret (TRITON_INTERPRET unset): the
tests call it in a subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys

import numpy as np


def _function(kernel):
    return getattr(kernel, "fn", kernel)


class _Pointer:
    """What Triton's type mangling reads of a buffer argument."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def data_ptr(self):
        return 0


def kernel_specs(executable, batches=(0,)):
    """JSON-able compile specs of every kernel `executable` launches at these batch sizes."""
    from triton.runtime.jit import mangle_type

    from kgraph.compiler.lower.triton import device_functions

    specs = []
    for n in batches:
        for kernel, launch in zip(executable.kernels, executable.program.launches):
            metas = launch.configs(n, False)
            fn = _function(kernel)
            names = list(inspect.signature(fn).parameters)
            module_path = device_functions.__file__ if launch.from_helpers else executable.module.__file__
            source = inspect.getsource(fn)
            key = hashlib.sha256(source.replace(launch.kernel, "KERNEL", 1).encode()).hexdigest()[:20]
            for meta in metas:
                constexprs = {k: v for k, v in meta.items() if k not in ("num_warps", "num_stages")}
                signature = {}
                values = iter(launch.args)
                for name in names:
                    if name in constexprs:
                        signature[name] = "constexpr"
                        continue
                    value = next(values)
                    signature[name] = "i32" if callable(value) else mangle_type(_Pointer(value.dtype))
                specs.append(dict(path=module_path, kernel=launch.kernel, signature=signature,
                                  constexprs=constexprs, num_warps=meta.get("num_warps", 4),
                                  num_stages=meta.get("num_stages", 3), source_key=key))
    return specs


def _load(path, cache):
    module = cache.get(path)
    if module is None:
        name = f"kgraph_aot_{hashlib.sha256(path.encode()).hexdigest()[:16]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        cache[path] = module
    return module


def compile_specs(specs, targets=(("cuda", 90), ("cuda", 80))):
    """Compile each spec for each (backend, arch); one result dict per pair."""
    from kgraph.runtime.gpu import import_triton, interpreting

    if interpreting():
        raise RuntimeError("ahead-of-time compilation needs a process without TRITON_INTERPRET")
    triton = import_triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    modules, results = {}, []
    for spec in specs:
        kernel = getattr(_load(spec["path"], modules), spec["kernel"])
        for backend, arch in targets:
            result = dict(kernel=spec["kernel"], arch=arch, ok=False, stages=[], error="")
            try:
                source = ASTSource(kernel, spec["signature"], spec["constexprs"])
                compiled = triton.compile(source, target=GPUTarget(backend, arch, 32),
                                          options={"num_warps": spec["num_warps"],
                                                   "num_stages": spec["num_stages"]})
                result["stages"] = sorted(compiled.asm)
                result["ok"] = "ptx" in compiled.asm
            except Exception as error:  # reported, not raised: the caller lists every failure
                result["error"] = f"{type(error).__name__}: {error}"
            results.append(result)
    return results
