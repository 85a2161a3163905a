"""Runs a graph lowered to Triton kernels: device buffers, arenas once per batch size.

On an NVIDIA GPU, memory comes from numba-cuda device arrays, else cupy, else the CUDA
driver API through ctypes (libcuda.so, which Triton itself needs); each buffer is wrapped
so that Triton sees `data_ptr()` and `dtype`. torch is never imported. Without a GPU,
under TRITON_INTERPRET=1, the same kernels run in Triton's CPU interpreter over numpy
arrays wrapped the same way (plus the few torch-style methods the interpreter's
host-copy step calls, all no-ops here because the "device" is host memory).

Like the CPU executable, one Python call runs every kernel of the step in order; the
arenas of the memory plan are allocated once per batch size and the launch list (kernel,
grid, arguments, block sizes) is resolved once per batch size too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections import OrderedDict

import numpy as np

GPU_EXTRA_HINT = "pip install 'kgraph[gpu]' (or: pip install triton)"


# -- environment -------------------------------------------------------------------------------------
def interpreting():
    """Whether Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "no", "off")


def prepare_triton_environment():
    """Triton's cache under kgraph's kernel cache; FP contraction on (Triton's old default)."""
    if "TRITON_CACHE_DIR" not in os.environ:
        from kgraph.runtime.cache import cache_dir

        path = cache_dir() / "triton"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TRITON_CACHE_DIR"] = str(path)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def import_triton():
    """The triton module, or an ImportError that says how to install it."""
    prepare_triton_environment()
    try:
        import triton
    except ImportError as error:
        raise ImportError(f"kgraph's GPU backend needs Triton, which is not installed: {GPU_EXTRA_HINT}") from error
    return triton


def gpu_problem():
    """None when Triton can run kernels on an NVIDIA GPU here, else what is missing."""
    try:
        import_triton()
    except ImportError as error:
        return str(error)
    try:
        from triton.backends.nvidia.driver import CudaDriver

        if not CudaDriver.is_active():
            return ("no NVIDIA GPU is visible: the CUDA driver (libcuda.so.1) is missing or reports no "
                    "device (set CUDA_VISIBLE_DEVICES, or use the CPU: kgraph.config.set_device('cpu'))")
    except Exception as error:  # pragma: no cover - depends on the machine
        return f"Triton's CUDA driver failed to start: {error}"
    return None


def require_gpu():
    """Raise, saying what is missing, unless Triton can run kernels on a GPU here."""
    try:
        import_triton()
    except ImportError as error:
        raise ImportError(f"kgraph: the GPU device was asked for, but {error}") from error
    problem = gpu_problem()
    if problem:
        raise RuntimeError(f"kgraph: the GPU device was asked for, but {problem}")


# -- buffers ---------------------------------------------------------------------------------------
class HostBuffer:
    """A numpy array as Triton's interpreter sees a device tensor (data_ptr and dtype).

    The interpreter copies tensor arguments to the host and back through torch's storage
    methods; here the memory is already on the host, so those are identity or no-ops and
    kernels read and write the numpy memory itself.
    """

    def __init__(self, array=None):
        self.array = array

    @property
    def dtype(self):
        return self.array.dtype

    def data_ptr(self):
        return self.array.ctypes.data

    # the interpreter's host-copy protocol
    def untyped_storage(self):
        return self

    def cpu(self):
        return self

    def copy_(self, other):
        return self

    def new_empty(self, *args, **kwargs):
        return HostBuffer(self.array)

    def set_(self, storage, *args):
        self.array = storage.array
        return self

    def storage_offset(self):
        return 0

    def size(self):
        return self.array.shape

    def stride(self):
        return tuple(s // self.array.itemsize for s in self.array.strides)


class DeviceBuffer:
    """A slice of device memory: Triton reads `data_ptr()` and `dtype`."""

    __slots__ = ("memory", "owner", "byte_offset", "pointer", "dtype", "shape", "nbytes")

    def __init__(self, memory, owner, pointer, byte_offset, dtype, shape):
        self.memory, self.owner, self.byte_offset = memory, owner, byte_offset
        self.pointer = pointer
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def data_ptr(self):
        return self.pointer

    def view(self, element_offset, shape, dtype=None):
        dtype = np.dtype(dtype or self.dtype)
        offset = element_offset * dtype.itemsize
        return DeviceBuffer(self.memory, self.owner, self.pointer + offset, self.byte_offset + offset, dtype, shape)

    # The interpreter's host-copy protocol (HostBuffer's); only HostMemory's buffers, which
    # lie in host memory, are ever run by the interpreter.
    def untyped_storage(self):
        return self

    def cpu(self):
        return self

    def copy_(self, other):
        return self

    def new_empty(self, *args, **kwargs):
        return self

    def set_(self, *args):
        return self

    def storage_offset(self):
        return 0

    def size(self):
        return self.shape

    def stride(self):
        return tuple(int(np.prod(self.shape[k + 1:], dtype=np.int64)) for k in range(len(self.shape)))

    def upload(self, array):
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.nbytes:
            self.memory.upload(self, array)

    def download(self, out=None):
        out = np.empty(self.shape, self.dtype) if out is None else out
        if out.nbytes:
            self.memory.download(self, out)
        return out


class _NumbaMemory:
    """Device memory from numba-cuda device arrays (bytes, carved by offset)."""

    name = "numba-cuda"

    def __init__(self):
        from numba import cuda

        if not cuda.is_available():
            raise RuntimeError("numba.cuda finds no GPU")
        self.cuda = cuda
        cuda.current_context()  # the device's primary context, the one Triton launches in

    def allocate(self, nbytes):
        owner = self.cuda.device_array(max(int(nbytes), 1), dtype=np.uint8)
        return owner, owner.device_ctypes_pointer.value

    def upload(self, buffer, array):
        start = buffer.byte_offset
        buffer.owner[start:start + array.nbytes].copy_to_device(array.reshape(-1).view(np.uint8))

    def download(self, buffer, out):
        start = buffer.byte_offset
        buffer.owner[start:start + out.nbytes].copy_to_host(out.reshape(-1).view(np.uint8))

    def synchronize(self):
        self.cuda.synchronize()


class _CupyMemory:
    name = "cupy"

    def __init__(self):
        import cupy

        self.cupy = cupy
        cupy.cuda.runtime.getDeviceCount()

    def allocate(self, nbytes):
        owner = self.cupy.cuda.alloc(max(int(nbytes), 1))
        return owner, int(owner.ptr)

    def upload(self, buffer, array):
        (buffer.owner + buffer.byte_offset).copy_from_host(array.ctypes.data, array.nbytes)

    def download(self, buffer, out):
        (buffer.owner + buffer.byte_offset).copy_to_host(out.ctypes.data, out.nbytes)

    def synchronize(self):
        self.cupy.cuda.runtime.deviceSynchronize()


class _DriverMemory:
    """The CUDA driver API through ctypes: what is left when neither numba-cuda nor cupy runs."""

    name = "cuda-driver"

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        device, context = ctypes.c_int(), ctypes.c_void_p()
        self._check(self.lib.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
        self._check(self.lib.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        self.lib.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
        self.lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        self.lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]

    @staticmethod
    def _check(code, what):
        if code != 0:
            raise RuntimeError(f"CUDA driver call {what} failed with error {code}")

    class _Allocation:
        def __init__(self, lib, pointer):
            self.lib, self.pointer = lib, pointer

        def __del__(self):
            try:
                self.lib.cuMemFree_v2(self.pointer)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def allocate(self, nbytes):
        pointer = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(max(int(nbytes), 1))),
                    "cuMemAlloc")
        return self._Allocation(self.lib, pointer.value), pointer.value

    def upload(self, buffer, array):
        self._check(self.lib.cuMemcpyHtoD_v2(buffer.pointer, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")

    def download(self, buffer, out):
        self._check(self.lib.cuMemcpyDtoH_v2(out.ctypes.data, buffer.pointer, out.nbytes), "cuMemcpyDtoH")

    def synchronize(self):
        self._check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")


class HostMemory:
    """Device memory emulated in host memory, for tests of the GPU path without a GPU: its
    buffers go through the same staging, uploads, downloads and autotuning, and the
    interpreter (TRITON_INTERPRET=1) runs the kernels on them."""

    name = "host (emulated device)"

    def allocate(self, nbytes):
        owner = np.zeros(max(int(nbytes), 1), np.uint8)
        return owner, owner.ctypes.data

    def upload(self, buffer, array):
        ctypes.memmove(buffer.pointer, array.ctypes.data, array.nbytes)

    def download(self, buffer, out):
        ctypes.memmove(out.ctypes.data, buffer.pointer, out.nbytes)

    def synchronize(self):
        pass


class DeviceMemory:
    """Allocates device buffers with the first backend that works here (or `impl`)."""

    BACKENDS = (_NumbaMemory, _CupyMemory, _DriverMemory)

    def __init__(self, backend=None, impl=None):
        if impl is not None:
            self.impl, self.name = impl, impl.name
            return
        errors = []
        for cls in self.BACKENDS:
            if backend and cls.name != backend:
                continue
            try:
                self.impl = cls()
                break
            except Exception as error:  # the next backend may work
                errors.append(f"{cls.name}: {error}")
        else:
            raise RuntimeError("no device memory allocator works here: " + "; ".join(errors))
        self.name = self.impl.name

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        owner, pointer = self.impl.allocate(nbytes)
        return DeviceBuffer(self.impl, owner, pointer, 0, dtype, shape)

    def to_device(self, array):
        array = np.ascontiguousarray(array)
        buffer = self.empty(array.shape, array.dtype)
        buffer.upload(array)
        return buffer

    def synchronize(self):
        self.impl.synchronize()


_MEMORY = None


def device_memory():
    global _MEMORY
    if _MEMORY is None:
        _MEMORY = DeviceMemory(os.environ.get("KGRAPH_GPU_MEMORY") or None)
    return _MEMORY


# -- the executable ------------------------------------------------------------------------------------
def _contiguous(value, dtype=None):
    array = np.asarray(value, dtype=dtype)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _linear(pair, n):
    coefficient, constant = pair
    return coefficient * n + constant


def _concrete(shape, n):
    return tuple(n if d is None else d for d in shape)


class _BatchState:
    """What one batch size needs: arenas, staging buffers for inputs, resolved launches."""

    def __init__(self):
        self.arenas = {}
        self.inputs = []
        self.calls = []  # [kernel, grid, args, meta, launch]
        self.tuned = False


class GpuExecutable:
    """A graph lowered to Triton kernels; calling it runs the whole graph once.

    Inputs are one array per placeholder. Under the interpreter, variables are the
    Variable objects' arrays, updated in place, and outputs are views into the arena
    (valid until the next call), as on the CPU. On a GPU, variables live in device
    mirrors: with `sync_variables` (the default) they are uploaded before and downloaded
    after every call; a loop that keeps them on the device sets it False and calls
    `push_variables()` / `pull_variables()` itself. Outputs are then host copies.
    """

    MAX_ARENAS = 3

    def __init__(self, graph, program, module, source, plan, interpret=None, memory=None):
        from kgraph.compiler.lower.triton import device_functions

        self.graph, self.program, self.module, self.source, self.plan = graph, program, module, source, plan
        self.interpret = interpreting() if interpret is None else interpret
        self.kernels = [getattr(device_functions if launch.from_helpers else module, launch.kernel)
                        for launch in program.launches]
        self.input_specs = [(graph.node(i).shape, graph.node(i).dtype, graph.node(i).name)
                            for i in program.placeholders]
        self.variables = [graph.node(i).payload for i in program.variable_nodes]
        constants = [_contiguous(graph.node(i).payload) for i in program.constants]
        self.sync_variables = True
        self.timings = {}  # (batch, launch index) -> {config: seconds} measured by autotuning
        if self.interpret:
            self.memory = None
            self._input_buffers = [HostBuffer() for _ in program.placeholders]
            self._variable_buffers = [HostBuffer(v._value) for v in self.variables]
            self._constant_buffers = [HostBuffer(c) for c in constants]
            self._constants = constants
        else:
            self.memory = memory or device_memory()
            self._variable_buffers = [self.memory.empty(np.shape(v._value), v._value.dtype) for v in self.variables]
            self._constant_buffers = [self.memory.to_device(c) for c in constants]
            self.push_variables()
        self._states = OrderedDict()

    # -- variables on the device ---------------------------------------------------------------
    def push_variables(self):
        if not self.interpret:
            for variable, buffer in zip(self.variables, self._variable_buffers):
                buffer.upload(variable._value)

    def pull_variables(self, only=None):
        """Download the device values into the Variables (only those in `only`, if given)."""
        if not self.interpret:
            wanted = None if only is None else {id(v) for v in only}
            for variable, buffer in zip(self.variables, self._variable_buffers):
                if wanted is None or id(variable) in wanted:
                    buffer.download(variable._value)

    # -- per batch size ----------------------------------------------------------------------------
    def batch_of(self, inputs):
        for (shape, _, _), array in zip(self.input_specs, inputs):
            for static, actual in zip(shape, array.shape):
                if static is None:
                    return actual
        return 0

    def _resolve(self, ref, state, n):
        if ref.kind == "input":
            return self._input_buffers[ref.index] if self.interpret else state.inputs[ref.index]
        if ref.kind == "variable":
            return self._variable_buffers[ref.index]
        if ref.kind == "constant":
            return self._constant_buffers[ref.index]
        arena = state.arenas[ref.dtype]
        offset, shape = _linear(ref.offset, n), _concrete(ref.shape, n)
        if self.interpret:
            count = int(np.prod(shape, dtype=np.int64))
            return HostBuffer(arena[offset:offset + count].reshape(shape))
        return arena.view(offset, shape)

    def _state_for(self, n):
        state = self._states.get(n)
        if state is not None:
            return state
        if n is not None and n < self.program.min_batch:
            raise ValueError(f"slice: the batch is smaller than the slice end {self.program.min_batch}")
        state = _BatchState()
        for dtype in self.program.arena_dtypes:
            count = max(self.plan.arena_elements(dtype, n or 0), 1)
            state.arenas[dtype] = (np.empty(count, dtype) if self.interpret
                                   else self.memory.empty((count,), dtype))
        if not self.interpret:
            state.inputs = [self.memory.empty(_concrete(shape, n), dtype) for shape, dtype, _ in self.input_specs]
        for kernel, launch in zip(self.kernels, self.program.launches):
            args = [a(n) if callable(a) else self._resolve(a, state, n) for a in launch.args]
            configs = launch.configs(n, self.interpret)
            meta = dict(configs[0])
            state.calls.append([kernel, launch.grid(n, meta), args, meta, launch, configs])
        self._states[n] = state
        while len(self._states) > self.MAX_ARENAS:
            self._states.popitem(last=False)
        return state

    # -- running ----------------------------------------------------------------------------------
    def _checked(self, inputs):
        if len(inputs) != len(self.input_specs):
            raise ValueError(f"graph '{self.graph.name}' takes {len(self.input_specs)} inputs, got {len(inputs)}")
        arrays = []
        for (shape, dtype, name), value in zip(self.input_specs, inputs):
            array = _contiguous(value, dtype)
            if len(array.shape) != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
                raise ValueError(f"input '{name}': expected shape {shape}, got {array.shape}")
            arrays.append(array)
        return arrays

    def _autotune(self, state, n):
        """Times each GPU configuration of the launches that have several (matmul), once."""
        for index, call in enumerate(state.calls):
            kernel, _, args, _, launch, configs = call
            if len(configs) > 1 and launch.idempotent:
                timings = {}
                for meta in configs:
                    grid = launch.grid(n, meta)
                    kernel[grid](*args, **meta)  # compiles
                    self.memory.synchronize()
                    start = time.perf_counter()
                    for _ in range(3):
                        kernel[grid](*args, **meta)
                    self.memory.synchronize()
                    timings[tuple(sorted(meta.items()))] = (time.perf_counter() - start) / 3
                best = min(timings, key=timings.get)
                call[3] = dict(best)
                call[1] = launch.grid(n, call[3])
                self.timings[n, index] = timings
            kernel, grid, args, meta = call[:4]
            kernel[grid](*args, **meta)
        state.tuned = True

    def run(self, *inputs):
        """Run the step; outputs stay where they are (arena views or device buffers)."""
        arrays = self._checked(inputs)
        n = self.batch_of(arrays)
        state = self._state_for(n)
        if self.interpret:
            for buffer, array in zip(self._input_buffers, arrays):
                buffer.array = array
            for buffer, variable in zip(self._variable_buffers, self.variables):
                buffer.array = variable._value
            with np.errstate(all="ignore"):
                for kernel, grid, args, meta, *_ in state.calls:
                    kernel[grid](*args, **meta)
            return state, n, arrays
        for buffer, array in zip(state.inputs, arrays):
            buffer.upload(array)
        if self.sync_variables:
            self.push_variables()
        # (emulated device memory runs in the interpreter, whose numpy warns on log(0) etc.)
        with np.errstate(all="ignore") if interpreting() else contextlib.nullcontext():
            if not state.tuned:
                self._autotune(state, n)
            else:
                for kernel, grid, args, meta, *_ in state.calls:
                    kernel[grid](*args, **meta)
        if self.sync_variables:
            self.pull_variables()
        return state, n, arrays

    def __call__(self, *inputs):
        state, n, arrays = self.run(*inputs)
        return tuple(self._output(ref, state, n, arrays) for ref in self.program.outputs)

    def _output(self, ref, state, n, arrays):
        shape = _concrete(ref.shape, n)
        if self.interpret:
            if ref.kind == "input":
                return arrays[ref.index].reshape(shape)
            if ref.kind == "variable":
                return self.variables[ref.index]._value.reshape(shape)
            if ref.kind == "constant":
                return self._constants[ref.index].reshape(shape)
            return self._resolve(ref, state, n).array
        if ref.kind == "input":
            return arrays[ref.index].reshape(shape).copy()
        buffer = self._resolve(ref, state, n)
        return buffer.view(0, shape).download()

    def synchronize(self):
        if self.memory is not None:
            self.memory.synchronize()
