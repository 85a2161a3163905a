"""The `kgraph` command: export, summary, run, inspect and bench models.

Every verb exits non-zero with a one-line reason on bad input (missing file, wrong
format, an op without an ONNX mapping).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _require_file(path, suffixes, what):
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    if not path.endswith(suffixes):
        raise CommandError(f"{path}: expected {what} ({' or '.join(suffixes)})")


def _load_keras(path):
    from kgraph.saving import load_model

    _require_file(path, (".keras",), "a .keras model")
    try:
        return load_model(path, compile=False)
    except Exception as error:  # the loader's errors already name the file and the object
        raise CommandError(f"{path}: cannot load: {error}") from error


def _onnx_session(path):
    import onnxruntime

    _require_file(path, (".onnx",), "an ONNX model")
    try:
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise CommandError(f"{path}: onnxruntime cannot load it: {error}") from error


def cmd_export(args):
    from kgraph.exporters import export
    from kgraph.exporters.onnx_ops import OnnxExportError

    if args.format not in ("onnx", "archive"):
        raise CommandError(f"export format '{args.format}' is not supported; use --format onnx or archive")
    model = _load_keras(args.model)
    if args.format == "onnx" and not args.output.endswith(".onnx"):
        raise CommandError(f"{args.output}: the ONNX output file must end in .onnx")
    start = time.perf_counter()
    try:
        export(model, args.output, format=args.format, verbose=False,
               **({"opset": args.opset} if args.format == "onnx" else {}))
    except (OnnxExportError, ValueError) as error:
        raise CommandError(str(error)) from error
    detail = f" (opset {args.opset})" if args.format == "onnx" else " (serving archive)"
    print(f"exported {args.model} to {args.output}{detail} in {time.perf_counter() - start:.2f} s")


def _load_archive(path):
    from kgraph.exporters import ArchiveError, load

    try:
        return load(path)
    except ArchiveError as error:
        raise CommandError(str(error)) from error


def cmd_summary(args):
    if os.path.isdir(args.model):
        archive = _load_archive(args.model)
        print(f"kgraph archive: {args.model}")
        for name, signature in archive.metadata["endpoints"].items():
            print(f"  endpoint {name}:")
            for kind in ("inputs", "outputs"):
                for value in signature[kind]:
                    print(f"    {kind[:-1]} {value['name']}: {value['dtype']} {tuple(value['shape'])}")
        return
    if args.model.endswith(".onnx"):
        session = _onnx_session(args.model)
        print(f"ONNX model: {args.model}")
        for kind, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
            for value in values:
                print(f"  {kind} {value.name}: {value.type} {value.shape}")
        return
    _load_keras(args.model).summary()


def _read_input(path):
    import numpy as np

    _require_file(path, (".npy",), "a .npy array")
    return np.load(path, allow_pickle=False)


def cmd_run(args):
    import numpy as np

    x = _read_input(args.input)
    if os.path.isdir(args.model):
        archive = _load_archive(args.model)
        if "serve" not in archive.endpoint_names:
            raise CommandError(f"{args.model}: the archive has no 'serve' endpoint "
                               f"(it has {', '.join(archive.endpoint_names)})")
        run = archive.serve
    elif args.model.endswith(".onnx"):
        session = _onnx_session(args.model)
        feed = session.get_inputs()[0]
        dtype = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64"}.get(feed.type)

        def run(x):
            return session.run(None, {feed.name: x.astype(dtype) if dtype else x})[0]
    else:
        model = _load_keras(args.model)

        def run(x):
            return model.predict(x, verbose=0)
    try:
        output = run(x)
    except Exception as error:  # bad shapes or dtypes: the runtimes' messages name what was expected
        raise CommandError(f"{args.model}: cannot run it on {args.input} {x.dtype}{tuple(x.shape)}: "
                           f"{error}") from error
    if isinstance(output, dict):
        output = list(output.values())[0]
    elif isinstance(output, (list, tuple)):
        output = output[0]
    if args.output:
        np.save(args.output, output)
        print(f"wrote {args.output} {tuple(output.shape)}")
    else:
        np.set_printoptions(precision=5, suppress=True)
        print(output)


def cmd_inspect(args):
    from kgraph.compiler.passes.fusion import format_groups
    from kgraph.compiler.passes.pipeline import compile_graph
    from kgraph.exporters.onnx import trace_inference_graph

    model = _load_keras(args.model)
    graph = trace_inference_graph(model)
    print("== optimized graph")
    print(graph.format())
    executable = compile_graph(graph)
    print("== fusion groups")
    print(format_groups(executable.graph, executable.groups))
    print("== generated numba source")
    print(executable.source)


def cmd_bench(args):
    import tempfile

    import numpy as np

    from kgraph.exporters import export
    from kgraph.exporters.onnx_ops import OnnxExportError

    if args.batch_size < 1 or args.batches < 1 or args.latency_calls < 1:
        raise CommandError("--batch-size, --batches and --latency-calls must be positive")
    model = _load_keras(args.model)
    rng = np.random.default_rng(0)
    count = args.batch_size * args.batches
    xs = [(rng.integers(0, 2, (count,) + tuple(t.shape[1:])) if "int" in str(t.dtype)
           else rng.standard_normal((count,) + tuple(t.shape[1:]))).astype(t.dtype) for t in model.inputs]
    feed = xs[0] if len(xs) == 1 else xs
    results = {}
    model.predict([x[:args.batch_size] for x in xs] if len(xs) > 1 else feed[:args.batch_size],
                  batch_size=args.batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(feed, batch_size=args.batch_size, verbose=0)
    results["kgraph_samples_per_s"] = count / (time.perf_counter() - start)
    one = [x[:1] for x in xs] if len(xs) > 1 else feed[:1]
    model(one)
    start = time.perf_counter()
    for _ in range(args.latency_calls):
        model(one)
    results["kgraph_batch1_latency_us"] = (time.perf_counter() - start) / args.latency_calls * 1e6
    with tempfile.TemporaryDirectory() as directory:
        onnx_path = os.path.join(directory, "model.onnx")
        start = time.perf_counter()
        try:
            export(model, onnx_path, format="onnx", verbose=False)
        except OnnxExportError as error:
            raise CommandError(str(error)) from error
        results["onnx_export_s"] = time.perf_counter() - start
        session = _onnx_session(onnx_path)
    names = [value.name for value in session.get_inputs()]

    def feeds(begin, stop):
        return {name: x[begin:stop] for name, x in zip(names, xs)}

    session.run(None, feeds(0, args.batch_size))
    start = time.perf_counter()
    for begin in range(0, count, args.batch_size):
        session.run(None, feeds(begin, begin + args.batch_size))
    results["onnxruntime_samples_per_s"] = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.latency_calls):
        session.run(None, feeds(0, 1))
    results["onnxruntime_batch1_latency_us"] = (time.perf_counter() - start) / args.latency_calls * 1e6
    results = {key: round(value, 4 if key == "onnx_export_s" else 1) for key, value in results.items()}
    results["batch_size"] = args.batch_size
    print(json.dumps(results))


def build_parser():
    import kgraph

    parser = argparse.ArgumentParser(prog="kgraph", description="Compile, export and run Keras models with kgraph.")
    parser.add_argument("--version", action="version", version=f"kgraph {kgraph.__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = verbs.add_parser("export", help="export a .keras model to ONNX or a serving archive")
    export.add_argument("model", help="the .keras file")
    export.add_argument("output", help="the .onnx file (or archive directory) to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (13 and up; default 17)")
    export.add_argument("--format", default="onnx", choices=("onnx", "archive"), help="export format")
    export.set_defaults(run=cmd_export)

    summary = verbs.add_parser("summary", help="print a model's layers, or an archive's or ONNX model's signature")
    summary.add_argument("model", help="a .keras file, an archive directory or an .onnx file")
    summary.set_defaults(run=cmd_summary)

    run = verbs.add_parser("run", help="run a model on an input array (.npy)")
    run.add_argument("model", help="a .keras file or archive (run by kgraph) or .onnx file (run by onnxruntime)")
    run.add_argument("--input", required=True, help="the input array, a .npy file")
    run.add_argument("--output", help="write the output array to this .npy file (default: print it)")
    run.set_defaults(run=cmd_run)

    inspect = verbs.add_parser("inspect", help="show the optimized IR, fusion groups and generated kernels")
    inspect.add_argument("model", help="the .keras file")
    inspect.set_defaults(run=cmd_inspect)

    bench = verbs.add_parser("bench", help="predict throughput and latency, kgraph vs onnxruntime")
    bench.add_argument("model", help="the .keras file")
    bench.add_argument("--batch-size", type=int, default=128)
    bench.add_argument("--batches", type=int, default=20)
    bench.add_argument("--latency-calls", type=int, default=200)
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.run(args)
    except CommandError as error:
        print(f"kgraph {args.command}: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
