"""kgraph.ops.linalg: the keras.ops.linalg namespace. Each supported function is the kgraph.ops
function of the same name; a keras.ops.linalg name kgraph lacks raises UnsupportedOpError."""

from kgraph.ops.namespace import module_getattr

__getattr__, __dir__ = module_getattr("linalg")


def jvp(fun, primals, tangents, has_aux=False):
    """(fun(*primals), J t): the forward-mode Jacobian-vector product of `fun` at `primals`
    along `tangents` (same structure), and fun's auxiliary output when has_aux (fun returns
    (output, aux)). Eager on arrays; on symbolic tensors it records into their graph.

    kgraph has reverse mode only: J t is reverse mode transposed (kgraph.compiler.autodiff.jvp),
    so every op fun uses needs a gradient rule whose ops have gradient rules too."""
    from kgraph import ops
    from kgraph.compiler import autodiff  # deferred: a transformation of the compiler's, not an op
    from kgraph.ir import Graph, SymbolicTensor, current_graph, is_tracing, tracing
    from kgraph.ops.control import _tree_map

    def leaves(tree):
        found = []
        _tree_map(found.append, tree)
        return found

    def rebuild(tree, values):
        values = iter(values)
        return _tree_map(lambda _: next(values), tree)

    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError(f"jvp: primals and tangents must be tuples or lists, got {type(primals).__name__} "
                        f"and {type(tangents).__name__}")
    primal_leaves, tangent_leaves = leaves(list(primals)), leaves(list(tangents))
    if len(primal_leaves) != len(tangent_leaves):
        raise ValueError(f"jvp: primals and tangents must have the same structure, got {len(primal_leaves)} "
                         f"and {len(tangent_leaves)} tensors")
    symbolic = is_tracing() or any(isinstance(x, SymbolicTensor) for x in primal_leaves + tangent_leaves)
    graph = current_graph() if is_tracing() else next(
        (x.graph for x in primal_leaves + tangent_leaves if isinstance(x, SymbolicTensor)), None) or Graph("jvp")
    feeds = []

    def node_of(value):
        value = ops.convert_to_tensor(value)
        if isinstance(value, SymbolicTensor):
            return value
        if symbolic:
            return SymbolicTensor(graph, graph.add_constant(value).id)
        feeds.append(value)
        return SymbolicTensor(graph, graph.add_placeholder(value.shape, value.dtype.name, f"jvp{len(feeds)}").id)

    with tracing(graph):
        primal_nodes = [node_of(x) for x in primal_leaves]
        tangent_nodes = [node_of(t) for t in tangent_leaves]
        for p, t in zip(primal_nodes, tangent_nodes):
            if tuple(p.shape) != tuple(t.shape):
                raise ValueError(f"jvp: a tangent of shape {tuple(t.shape)} for a primal of shape {tuple(p.shape)}")
        result = fun(*rebuild(list(primals), primal_nodes))
        output, aux = result if has_aux else (result, None)
        outputs = [node_of(y) for y in leaves(output)]
        pushed = autodiff.jvp(graph, [y.node_id for y in outputs], [p.node_id for p in primal_nodes],
                              [t.node_id for t in tangent_nodes])
        pushed = [SymbolicTensor(graph, i) for i in pushed]
        aux_nodes = [node_of(a) for a in leaves(aux)] if has_aux else []
    if not symbolic:
        from kgraph.runtime.reference import evaluate

        graph.outputs = [x.node_id for x in outputs + pushed + aux_nodes]
        values, _ = evaluate(graph, feeds)
        outputs, pushed, aux_nodes = (values[:len(outputs)], values[len(outputs):2 * len(outputs)],
                                      values[2 * len(outputs):])
    results = (rebuild(output, outputs), rebuild(output, pushed))
    return results + (rebuild(aux, aux_nodes),) if has_aux else results
