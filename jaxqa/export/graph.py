"""A JAX program as an ONNX graph: the jaxpr that jaxqa runs, written op by op.

`to_onnx(closed_jaxpr, inputs, params, outputs)` translates a jaxpr traced
with symbolic dimensions (`jax.export.symbolic_shape`) into an ONNX model whose
inputs keep those dimensions free (batch and sequence), and whose weights are
initializers named as jaxqa names them (`layer_0/attention/query/kernel`).

It knows the primitives a span model's forward pass uses in float32 (with its
layers unrolled: a `scan` is not translated); any other primitive is an
`ExportError` naming it. Shapes that depend on the free dimensions are
computed in the graph from the inputs' own shapes.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jaxqa.errors import Error

OPSET = 20  # Gelu's


class ExportError(Error):
    """A program jaxqa cannot write as ONNX."""


class _Dim:
    """A symbolic dimension's value in the graph: an int64 scalar tensor named
    `name`; arithmetic on it adds nodes (what `_evaluated` calls)."""

    def __init__(self, graph: "_Graph", name: str):
        self.graph, self.name = graph, name

    def _op(self, op: str, other) -> "_Dim":
        return _Dim(self.graph, self.graph.node(op, [self.name, self.graph.dim(other)]))

    def __add__(self, other):
        return self._op("Add", other)

    def __mul__(self, other):
        return self._op("Mul", other)

    __radd__, __rmul__ = __add__, __mul__  # all that a sum of products of the free dimensions needs


class _Graph:
    """The nodes, initializers and names of an ONNX graph being written."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.env: dict[Any, str] = {}  # jaxpr variable -> tensor name
        self.dims: dict[str, _Dim] = {}  # a symbolic dimension, expression or shape -> its tensor
        self.unexpanded: set = set()  # broadcasts that their consumers broadcast themselves
        self.producer: dict = {}  # jaxpr variable -> the equation that made it
        self.norms: dict[Any, _Norm] = {}  # jaxpr variable -> the LayerNormalization it is
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], **attributes) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attributes))
        return out

    def const(self, value, dtype=None, name: str | None = None) -> str:
        array = np.asarray(value, dtype)
        name = name or self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def dim(self, d) -> str:
        """An int64 scalar tensor of a dimension, constant or symbolic."""
        if isinstance(d, _Dim):
            return d.name
        if isinstance(d, (int, np.integer)):
            return self.const(int(d), np.int64)
        if str(d) not in self.dims:  # an expression of the free dimensions, computed once
            try:
                self.dims[str(d)] = _evaluated(d, self.dims)
            except TypeError:  # floor division or modulo of a free dimension
                raise ExportError(
                    f"the dimension {d}: only sums and products of the free dimensions are written"
                ) from None
        return self.dims[str(d)].name

    def shape(self, dims: Sequence) -> str:
        """An int64 1-D shape tensor, computed once per shape."""
        key = "shape " + ", ".join(map(str, dims))
        if key not in self.dims:
            if all(isinstance(d, (int, np.integer)) for d in dims):
                name = self.const([int(d) for d in dims], np.int64)
            else:
                axes = self.const([0], np.int64)
                name = self.node("Concat", [self.node("Unsqueeze", [self.dim(d), axes]) for d in dims], axis=0)
            self.dims[key] = _Dim(self, name)
        return self.dims[key].name

    def read(self, atom) -> str:
        if isinstance(atom, jax.extend.core.Literal):
            aval: Any = atom.aval
            return self.const(atom.val, np.dtype(aval.dtype))
        return self.env[atom]


def _evaluated(expression, values: dict):
    """A symbolic dimension's expression computed from `values` of its free
    dimensions (name -> value), in their own arithmetic. jax.export has no public
    way to do this: it is the private method of its expressions as jax 0.10.2
    names it (tests/test_export.py checks that it still computes so)."""
    return expression._evaluate(values)


Rule = Callable[[_Graph, list, list[str], dict], list[str]]
RULES: dict[str, Rule] = {}


def _rule(*names: str):
    def register(rule: Rule) -> Rule:
        for name in names:
            RULES[name] = rule
        return rule

    return register


def _elementwise(op: str) -> Rule:
    return lambda g, eqn, ins, params: [g.node(op, ins)]


for _name, _op in {
    "sub": "Sub",
    "max": "Max",
    "min": "Min",
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "tanh": "Tanh",
    "erf": "Erf",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "logistic": "Sigmoid",
    "pow": "Pow",
    "eq": "Equal",
    "lt": "Less",
    "gt": "Greater",
    "le": "LessOrEqual",
    "ge": "GreaterOrEqual",
    "not": "Not",
}.items():
    RULES[_name] = _elementwise(_op)


@_rule("and", "or")
def _logical(g, eqn, ins, params):
    op = eqn.primitive.name.capitalize()
    return [g.node(op if eqn.outvars[0].aval.dtype == np.bool_ else f"Bitwise{op}", ins)]


@_rule("ne")
def _ne(g, eqn, ins, params):
    return [g.node("Not", [g.node("Equal", ins)])]


# Idioms: what ONNX has an op for, and ONNX Runtime fuses further (LayerNorm,
# Softmax, Gelu), written as that op rather than as its steps.


def _made(g: _Graph, atom, primitive: str):
    """The equation of `primitive` that made `atom`, if one did (in this jaxpr)."""
    eqn = None if isinstance(atom, jax.extend.core.Literal) else g.producer.get(atom)
    return eqn if eqn is not None and eqn.primitive.name == primitive else None


def _literal(atom):
    return float(np.asarray(atom.val)) if isinstance(atom, jax.extend.core.Literal) and np.ndim(atom.val) == 0 else None


def _kept_reduction(g: _Graph, atom, primitive: str):
    """(operand, axes) of a `primitive` reduction whose result `atom` is, its
    reduced axes kept as 1s (a broadcast that adds only them)."""
    broadcast = _made(g, atom, "broadcast_in_dim")
    reduction = broadcast and _made(g, broadcast.invars[0], primitive)
    if not reduction:
        return None
    axes = tuple(int(a) for a in reduction.params["axes"])
    shape, kept = broadcast.params["shape"], tuple(int(d) for d in broadcast.params["broadcast_dimensions"])
    rank = len(shape)
    if kept != tuple(d for d in range(rank) if d not in axes) or any(shape[a] != 1 for a in axes):
        return None
    return reduction.invars[0], axes


def _mean_of(g: _Graph, div):
    """(x, axes) if the equation `div` is sum(x, axes, kept) / n, n the size of those axes."""
    summed = _kept_reduction(g, div.invars[0], "reduce_sum")
    if not summed:
        return None
    x, axes = summed
    sizes = [x.aval.shape[a] for a in axes]
    if not all(isinstance(n, int) for n in sizes) or _literal(div.invars[1]) != np.prod(sizes):
        return None
    return summed


def _mean(g: _Graph, atom):
    """x, if `atom` is the mean of x over its last axis, kept as 1."""
    div = _made(g, atom, "div")
    mean = div and _mean_of(g, div)
    return mean[0] if mean and mean[1] == (len(mean[0].aval.shape) - 1,) else None


@_rule("div")
def _div(g, eqn, ins, params):
    numerator, denominator = eqn.invars
    # mean: sum(x, axes, kept) / n -> ReduceMean
    mean = _mean_of(g, eqn)
    if mean:
        x, axes = mean
        return [g.node("ReduceMean", [g.read(x), g.const(list(axes), np.int64)], keepdims=1)]
    # softmax: exp(a - m) / sum(exp(a - m), last axis, kept), m constant along it -> Softmax(a)
    exp = _made(g, numerator, "exp")
    shifted = exp and _made(g, exp.invars[0], "sub")
    total = _kept_reduction(g, denominator, "reduce_sum")
    if shifted and total and total[0] is numerator and total[1] == (len(numerator.aval.shape) - 1,):
        a, m = shifted.invars
        if (
            not isinstance(a, jax.extend.core.Literal)
            and a.aval.shape == numerator.aval.shape
            and m.aval.shape[-1] == 1
        ):
            return [g.node("Softmax", [g.read(a)], axis=-1)]
    return [g.node("Div", ins)]


class _Norm(NamedTuple):
    """A LayerNormalization of `x` over its last axis, its scale and bias
    tensors (None: not yet taken in from the products and sums that follow)."""

    x: str
    width: int
    epsilon: float
    scale: str | None = None
    bias: str | None = None

    def node(self, g: _Graph) -> str:
        scale = self.scale or g.const(np.ones(self.width, np.float32))
        return g.node("LayerNormalization", [self.x, scale, *filter(None, [self.bias])], axis=-1, epsilon=self.epsilon)


def _vector(g: _Graph, atom, width: int) -> str | None:
    """The tensor of v, if `atom` is a vector v (width,) broadcast along the last axis."""
    broadcast = _made(g, atom, "broadcast_in_dim")
    if not broadcast or broadcast.invars[0].aval.shape != (width,):
        return None
    if tuple(broadcast.params["broadcast_dimensions"]) != (len(atom.aval.shape) - 1,):
        return None
    return g.read(broadcast.invars[0])


def _layer_norm(g: _Graph, centred, rsqrt) -> _Norm | None:
    """LayerNormalization of x over its last axis, without scale and bias, if
    `centred` * `rsqrt` is (x - mean(x)) * rsqrt(mean((x - mean(x))^2) + eps)."""
    centring = _made(g, centred, "sub")
    plus = _made(g, rsqrt.invars[0], "add")
    if not centring or not plus or _mean(g, centring.invars[1]) is not centring.invars[0]:
        return None
    x = centring.invars[0]
    for i, atom in enumerate(plus.invars):
        epsilon = _literal(plus.invars[1 - i])
        squared = _made(g, _mean(g, atom), "square") if epsilon is not None else None
        deviation = squared and _made(g, squared.invars[0], "sub")
        if deviation and deviation.invars[0] is x and _mean(g, deviation.invars[1]) is x:
            return _Norm(g.read(x), x.aval.shape[-1], epsilon)
    return None


def _affine_norm(g: _Graph, eqn, role: str) -> _Norm | None:
    """The LayerNormalization that the product or sum `eqn` of a
    LayerNormalization and a vector is, the vector taken as its `role` (scale or bias)."""
    for i, atom in enumerate(eqn.invars):
        norm = None if isinstance(atom, jax.extend.core.Literal) else g.norms.get(atom)
        vector = norm and _vector(g, eqn.invars[1 - i], norm.width)
        if not norm or not vector or norm.bias is not None:  # a scale after the bias is no LayerNormalization's
            continue
        if role == "bias":
            return norm._replace(bias=vector)
        if norm.scale is None:
            return norm._replace(scale=vector)
    return None


def _normalized(g: _Graph, eqn, norm: _Norm) -> list[str]:
    g.norms[eqn.outvars[0]] = norm
    return [norm.node(g)]


def _gelu(g: _Graph, half, erfc):
    """Gelu of x, if `half` * `erfc` is (0.5 * x) * erfc(-x * 1/sqrt(2)), as jax.nn.gelu writes it."""
    halving = _made(g, half, "mul")
    scaled = _made(g, erfc.invars[0], "mul")
    if not halving or not scaled or 0.5 not in map(_literal, halving.invars):
        return None
    x = halving.invars[1] if _literal(halving.invars[0]) == 0.5 else halving.invars[0]
    for i, atom in enumerate(scaled.invars):
        negated = _made(g, atom, "neg")
        if negated and negated.invars[0] is x and np.isclose(_literal(scaled.invars[1 - i]) or 0, np.sqrt(0.5)):
            return g.node("Gelu", [g.read(x)])
    return None


@_rule("mul")
def _mul(g, eqn, ins, params):
    scaled = _affine_norm(g, eqn, "scale")
    if scaled:
        return _normalized(g, eqn, scaled)
    for i, atom in enumerate(eqn.invars):
        other = eqn.invars[1 - i]
        rsqrt, erfc = _made(g, atom, "rsqrt"), _made(g, atom, "erfc")
        norm = rsqrt and _layer_norm(g, other, rsqrt)
        if norm:
            return _normalized(g, eqn, norm)
        gelu = erfc and _gelu(g, other, erfc)
        if gelu:
            return [gelu]
    return [g.node("Mul", ins)]


@_rule("add")
def _add(g, eqn, ins, params):
    shifted = _affine_norm(g, eqn, "bias")
    return _normalized(g, eqn, shifted) if shifted else [g.node("Add", ins)]


@_rule("erfc")
def _erfc(g, eqn, ins, params):
    return [g.node("Sub", [g.const(1.0, eqn.invars[0].aval.dtype), g.node("Erf", ins)])]


@_rule("square")
def _square(g, eqn, ins, params):
    return [g.node("Pow", [ins[0], g.const(2.0, eqn.invars[0].aval.dtype)])]


@_rule("rsqrt")
def _rsqrt(g, eqn, ins, params):
    return [g.node("Reciprocal", [g.node("Sqrt", ins)])]


@_rule("integer_pow")
def _integer_pow(g, eqn, ins, params):
    return [g.node("Pow", [ins[0], g.const(float(params["y"]), eqn.invars[0].aval.dtype)])]


@_rule("name", "copy", "copy_p", "stop_gradient", "optimization_barrier")
def _identity(g, eqn, ins, params):
    return list(ins)  # the same tensors


@_rule("convert_element_type")
def _convert(g, eqn, ins, params):
    to = helper.np_dtype_to_tensor_dtype(np.dtype(params["new_dtype"]))
    return [g.node("Cast", ins, to=to)]


@_rule("select_n")
def _select_n(g, eqn, ins, params):
    if len(ins) != 3 or eqn.invars[0].aval.dtype != np.bool_:
        raise ExportError("select_n: only a two-way choice on a boolean is written to ONNX")
    return [g.node("Where", [ins[0], ins[2], ins[1]])]


@_rule("reduce_sum", "reduce_max", "reduce_min")
def _reduce(g, eqn, ins, params):
    op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}[eqn.primitive.name]
    return [g.node(op, [ins[0], g.const(list(params["axes"]), np.int64)], keepdims=0)]


@_rule("transpose")
def _transpose(g, eqn, ins, params):
    return [_transposed(g, ins[0], eqn.invars[0].aval.shape, [int(p) for p in params["permutation"]])]


@_rule("reshape")
def _reshape(g, eqn, ins, params):
    if params.get("dimensions") is not None:
        raise ExportError("reshape with dimensions: not written to ONNX")
    return [g.node("Reshape", [ins[0], g.shape(params["new_sizes"])])]


@_rule("squeeze")
def _squeeze(g, eqn, ins, params):
    return [g.node("Squeeze", [ins[0], g.const(list(params["dimensions"]), np.int64)])]


@_rule("expand_dims")
def _expand_dims(g, eqn, ins, params):
    return [g.node("Unsqueeze", [ins[0], g.const(list(params["dimensions"]), np.int64)])]


@_rule("broadcast_in_dim")
def _broadcast_in_dim(g, eqn, ins, params):
    shape, kept = params["shape"], [int(d) for d in params["broadcast_dimensions"]]
    new = [d for d in range(len(shape)) if d not in kept]
    if eqn.outvars[0] in g.unexpanded and new == list(range(len(new))):
        return [ins[0]]  # NumPy's broadcasting adds the leading axes (a bias stays a vector, as fusions want it)
    x = g.node("Unsqueeze", [ins[0], g.const(new, np.int64)]) if new else ins[0]
    operand = eqn.invars[0].aval.shape
    already = all(shape[d] == 1 for d in new) and all(operand[i] == shape[d] for i, d in enumerate(kept))
    if already or eqn.outvars[0] in g.unexpanded:  # ONNX's elementwise ops broadcast as NumPy does
        return [x]
    return [g.node("Expand", [x, g.shape(shape)])]


@_rule("concatenate")
def _concatenate(g, eqn, ins, params):
    return [g.node("Concat", ins, axis=int(params["dimension"]))]


@_rule("iota")
def _iota(g, eqn, ins, params):
    shape, axis = params["shape"], int(params["dimension"])
    dtype = np.dtype(params["dtype"])
    count = g.dim(shape[axis])
    line = g.node("Range", [g.const(0, np.int64), count, g.const(1, np.int64)])
    line = g.node("Cast", [line], to=helper.np_dtype_to_tensor_dtype(dtype))
    column = [1] * len(shape)
    column[axis] = -1
    return [g.node("Expand", [g.node("Reshape", [line, g.const(column, np.int64)]), g.shape(shape)])]


@_rule("pad")
def _pad(g, eqn, ins, params):
    config = params["padding_config"]
    if any(interior for _, _, interior in config):
        raise ExportError("pad with interior padding: not written to ONNX")
    pads = [int(lo) for lo, _, _ in config] + [int(hi) for _, hi, _ in config]
    return [g.node("Pad", [ins[0], g.const(pads, np.int64), ins[1]], mode="constant")]


@_rule("slice")
def _slice(g, eqn, ins, params):
    starts, limits = params["start_indices"], params["limit_indices"]
    steps = params["strides"] or [1] * len(starts)
    axes = list(range(len(starts)))
    return [
        g.node(
            "Slice",
            [ins[0], g.shape(starts), g.shape(limits), g.const(axes, np.int64), g.const(list(steps), np.int64)],
        )
    ]


@_rule("gather")
def _gather(g, eqn, ins, params):
    """The two gathers a span model makes: rows of a table (an embedding
    lookup) and a slice at computed starts (`dynamic_slice`)."""
    numbers, sizes = params["dimension_numbers"], params["slice_sizes"]
    operand, indices = eqn.invars[0].aval, eqn.invars[1].aval
    rank = len(operand.shape)
    if numbers.operand_batching_dims:
        raise ExportError("gather with batching dimensions: not written to ONNX")
    if numbers.collapsed_slice_dims == (0,) and numbers.start_index_map == (0,) and indices.shape[-1] == 1:
        if tuple(numbers.offset_dims) != tuple(range(len(indices.shape) - 1, len(indices.shape) - 2 + rank)):
            raise ExportError("gather of rows whose offsets are not last: not written to ONNX")
        rows = g.node("Squeeze", [ins[1], g.const([-1], np.int64)])
        return [g.node("Gather", [ins[0], rows], axis=0)]
    collapsed = [int(a) for a in numbers.collapsed_slice_dims]
    if len(indices.shape) == 1 and tuple(numbers.offset_dims) == tuple(range(rank - len(collapsed))):
        axes = [int(a) for a in numbers.start_index_map]
        starts = g.node("Cast", [ins[1]], to=TensorProto.INT64)
        ends = g.node("Add", [starts, g.shape([sizes[a] for a in axes])])
        window = g.node("Slice", [ins[0], starts, ends, g.const(axes, np.int64)])
        return [g.node("Squeeze", [window, g.const(collapsed, np.int64)]) if collapsed else window]
    raise ExportError(f"gather with {numbers}: not written to ONNX")


@_rule("dot_general")
def _dot_general(g, eqn, ins, params):
    """ONNX's MatMul, which int8 tools quantize and ONNX Runtime runs best: as
    it is for a product with a weight matrix (K, N); otherwise between the
    operands laid out as (batch..., M, K) and (batch..., K, N), M, K and N
    each the product of their dimensions, in the order that leaves the larger
    operand as it lies (then the result's last two axes are swapped)."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    if not lb and len(rhs) == 2 and tuple(rc) == (0,) and tuple(lc) == (len(lhs) - 1,):
        return [g.node("MatMul", ins)]
    lb, rb, lc, rc = (list(map(int, dims)) for dims in (lb, rb, lc, rc))
    lf = [i for i in range(len(lhs)) if i not in lc and i not in lb]
    rf = [j for j in range(len(rhs)) if j not in rc and j not in rb]
    batch = [lhs[i] for i in lb]
    # Order A: lhs (batch, M, K) @ rhs (batch, K, N); order B: rhs (batch, N, K) @ lhs (batch, K, M).
    orders = {
        "A": ((ins[0], lhs, lb + lf + lc, lf, lc), (ins[1], rhs, rb + rc + rf, rc, rf)),
        "B": ((ins[1], rhs, rb + rf + rc, rf, rc), (ins[0], lhs, lb + lc + lf, lc, lf)),
    }
    order = min(orders, key=lambda o: sum(_moved(shape, perm) for _, shape, perm, _, _ in orders[o]))
    operands = []
    for name, shape, perm, rows, columns in orders[order]:
        laid = _transposed(g, name, shape, perm)
        if len(rows) != 1 or len(columns) != 1:  # else it lies as (batch..., M, K) already
            matrix = [*batch, _product(shape[i] for i in rows), _product(shape[i] for i in columns)]
            laid = g.node("Reshape", [laid, g.shape(matrix)])
        operands.append(laid)
    product = g.node("MatMul", operands)
    if order == "B":
        rank = len(batch) + 2
        product = g.node("Transpose", [product], perm=[*range(rank - 2), rank - 1, rank - 2])
    if len(lf) == 1 and len(rf) == 1:  # (batch..., M, N) is the product's own shape
        return [product]
    return [g.node("Reshape", [product, g.shape(eqn.outvars[0].aval.shape)])]


def _moved(shape, perm) -> int:
    """About how many elements a transpose by `perm` copies: none if it moves
    only axes of size 1 (a reshape), else all (free dimensions counted as 128)."""
    real = [axis for axis in perm if shape[axis] != 1]
    if real == sorted(real):
        return 0
    return int(np.prod([d if isinstance(d, int) else 128 for d in shape]))


def _transposed(g: _Graph, name: str, shape, perm) -> str:
    """`name` transposed by `perm`; a reshape where only axes of size 1 move."""
    if list(perm) == sorted(perm):
        return name
    if not _moved(shape, perm):
        return g.node("Reshape", [name, g.shape([shape[axis] for axis in perm])])
    return g.node("Transpose", [name], perm=list(perm))


def _product(dims):
    out = 1
    for d in dims:
        out = out * d
    return out


@_rule("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat", "checkpoint")
def _call(g, eqn, ins, params):
    inner = params.get("jaxpr") or params.get("call_jaxpr") or params.get("fun_jaxpr")
    closed = inner if hasattr(inner, "consts") else jax.extend.core.ClosedJaxpr(inner, ())
    return _inline(g, closed, ins)


# Elementwise primitives whose ONNX ops broadcast their operands as NumPy does.
BROADCASTING = {
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "pow",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "and",
    "or",
    "select_n",
}


def _unexpanded(jaxpr) -> set:
    """The broadcasts of `jaxpr` that need not be materialised: every consumer
    broadcasts, and has another operand of its own full shape (which a
    materialised value has), so that it gives its full shape still."""
    lazy = {eqn.outvars[0] for eqn in jaxpr.eqns if eqn.primitive.name == "broadcast_in_dim"}
    lazy -= {v for v in jaxpr.outvars if not isinstance(v, jax.extend.core.Literal)}
    for eqn in jaxpr.eqns:
        variables = [v for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)]
        used = [v for v in variables if v in lazy]
        full = [v for v in variables if v not in lazy and v.aval.shape == eqn.outvars[0].aval.shape]
        if used and (eqn.primitive.name not in BROADCASTING or not full):
            lazy -= set(used)
    return lazy


def _inline(g: _Graph, closed, ins: list[str]) -> list[str]:
    jaxpr = closed.jaxpr
    g.unexpanded |= _unexpanded(jaxpr)
    for var, value in zip(jaxpr.constvars, closed.consts):
        g.env[var] = g.const(np.asarray(value))
    for var, name in zip(jaxpr.invars, ins):
        g.env[var] = name
    for eqn in jaxpr.eqns:
        rule = RULES.get(eqn.primitive.name)
        if rule is None:
            raise ExportError(f"the primitive {eqn.primitive.name!r} is not written to ONNX")
        outs = rule(g, eqn, [g.read(v) for v in eqn.invars], eqn.params)
        for var, name in zip(eqn.outvars, outs):
            g.env[var], g.producer[var] = name, eqn
    return [g.read(v) for v in jaxpr.outvars]


def _needed(g: _Graph, outputs: Sequence[str]) -> tuple[list, list]:
    """The nodes and initializers the outputs need, in their order (an idiom
    leaves the steps it replaced unused)."""
    wanted, kept = set(outputs), []
    for node in reversed(g.nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1], [tensor for tensor in g.initializers if tensor.name in wanted]


def _value_info(name: str, aval) -> onnx.ValueInfoProto:
    dims = [d if isinstance(d, int) else str(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), dims)


def to_onnx(
    closed, params: dict[str, np.ndarray], inputs: Sequence[str], outputs: Sequence[str], doc: str = ""
) -> onnx.ModelProto:
    """The ONNX model of `closed`, a jaxpr whose arguments are the flat
    `params` (name -> array, made initializers) then the `inputs`, named. Each
    symbolic dimension is read from the shape of the first input that has it."""
    g = _Graph()
    invars = closed.jaxpr.invars
    for var, (name, value) in zip(invars, params.items()):
        g.env[var] = g.const(value, name=name)
    feeds = invars[len(params) :]
    for var, name in zip(feeds, inputs):
        g.env[var] = name
        for axis, d in enumerate(var.aval.shape):
            if not isinstance(d, int) and str(d) not in g.dims:
                shape = g.node("Shape", [name], start=axis, end=axis + 1)
                g.dims[str(d)] = _Dim(g, g.node("Squeeze", [shape, g.const([0], np.int64)]))
    results = _inline(g, jax.extend.core.ClosedJaxpr(closed.jaxpr, closed.consts), [g.env[v] for v in invars])
    for result, name in zip(results, outputs):
        g.nodes.append(helper.make_node("Identity", [result], [name]))
    nodes, initializers = _needed(g, outputs)
    graph = helper.make_graph(
        nodes,
        "jaxqa",
        [_value_info(name, var.aval) for var, name in zip(feeds, inputs)],
        [_value_info(name, var.aval) for var, name in zip(closed.jaxpr.outvars, outputs)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = 9  # opset 20's, which ONNX Runtime reads since 1.16
    return model
