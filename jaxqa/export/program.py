"""The program an export writes: a span model's forward pass, traced as the
export's execution asks (`execution.for_export`: every layer on its own,
attention as separate products, and LiteRT's own ops for LiteRT), over its
weights one layer per name, as files name them.

The model holds its layers as stacked runs and reads them one by one
(`jaxqa.models.stacking`). Traced from the weights one layer per name, that
program would stack them and slice each layer back out: `traced` forwards
every layer read out of a stack (`squeeze(slice(stack(w_0, ..., w_n)))`) to
w_k itself, and leaves out what is then unused, so that each layer's products
take that layer's own weights, as a runtime's quantizer and kernels want them.

A compact model may hold a layer of no heads or no feed-forward units, whose
products run over an empty axis ((B, T, 0) by (0, D)) and give zeros: the
program gives those zeros as constants (`empty_products_as_zeros`), so that
no empty tensor reaches a runtime (LiteRT's converter dies of a division by
zero on them, and ONNX Runtime's quantizer fails or computes a wrong scale).
"""

import jax
import jax.extend.core as jex
import numpy as np
from flax import traverse_util

from jaxqa.models import execution
from jaxqa.models.encoder import SpanModel, file_shapes, per_layer, stacked


def file_weights(config, params: dict) -> dict[str, np.ndarray]:
    """`params` one layer per name, float32 numpy, in the order of `span_program`'s arguments."""
    flat = traverse_util.flatten_dict(per_layer(config, jax.device_get(params)), sep="/")
    return {key: np.asarray(flat[key], np.float32) for key in sorted(flat)}  # jax flattens a dict by sorted keys


def span_program(config, fmt: str, window: jax.ShapeDtypeStruct) -> jex.ClosedJaxpr:
    """The jaxpr of `SpanModel(config)`'s forward pass as `fmt` ("onnx" or
    "litert") runs it, whose arguments are the weights (`file_weights`), then
    token ids, attention mask and token types, each shaped as `window`."""
    model = SpanModel(config, execution=execution.for_export(fmt))

    def forward(weights, input_ids, attention_mask, token_type_ids):
        tree = stacked(config, traverse_util.unflatten_dict(weights, sep="/"))
        return model.apply({"params": tree}, input_ids, attention_mask, token_type_ids)

    shapes = file_shapes(config)
    weights = {key: shapes[key] for key in sorted(shapes)}
    return empty_products_as_zeros(layers_read_in_place(jax.make_jaxpr(forward)(weights, window, window, window)))


def layers_read_in_place(closed: jex.ClosedJaxpr) -> jex.ClosedJaxpr:
    """`closed` with each `squeeze(slice(stack(w_0, ..., w_n)))` that takes entry k
    whole along the stacked axis replaced by w_k, and the equations whose
    results nothing uses (and that have no effects) left out."""
    jaxpr = closed.jaxpr
    made: dict = {}  # variable -> the equation that made it
    alias: dict = {}  # variable -> the atom that stands for it
    eqns = []
    for eqn in jaxpr.eqns:
        eqn = eqn.replace(invars=[_read(alias, v) for v in eqn.invars])
        entry = _entry_of_stack(eqn, made)
        if entry is not None:
            alias[eqn.outvars[0]] = entry
            continue
        made.update(dict.fromkeys(eqn.outvars, eqn))
        eqns.append(eqn)
    return _used(closed, eqns, [_read(alias, v) for v in jaxpr.outvars])


def empty_products_as_zeros(closed: jex.ClosedJaxpr) -> jex.ClosedJaxpr:
    """`closed` with each product that contracts an empty axis replaced by the
    zeros it gives, of its shape, and the equations whose results nothing then
    uses (the empty tensors that fed it) left out."""
    eqns = [_zeros(eqn.outvars[0]) if _contracts_nothing(eqn) else eqn for eqn in closed.jaxpr.eqns]
    return _used(closed, eqns, closed.jaxpr.outvars)


def _contracts_nothing(eqn) -> bool:
    if eqn.primitive.name != "dot_general":
        return False
    (contracted, _), _ = eqn.params["dimension_numbers"]
    shape = eqn.invars[0].aval.shape
    return any(isinstance(shape[axis], int) and shape[axis] == 0 for axis in contracted)


def _zeros(var) -> jex.JaxprEqn:
    """The equation that sets `var` to zeros of its shape and dtype (shapes may be symbolic)."""
    zero = jex.Literal(np.zeros((), var.aval.dtype), jax.core.ShapedArray((), var.aval.dtype))
    params = {"shape": var.aval.shape, "broadcast_dimensions": (), "sharding": None}
    return jex.new_jaxpr_eqn([zero], [var], jex.primitives.broadcast_in_dim_p, params, jex.no_effects)


def _used(closed: jex.ClosedJaxpr, eqns: list, outvars: list) -> jex.ClosedJaxpr:
    """`closed` as the equations `eqns` giving `outvars`, those whose results
    nothing uses (and that have no effects) left out."""
    jaxpr = closed.jaxpr
    used = {v for v in outvars if isinstance(v, jex.Var)}
    kept = []
    for eqn in reversed(eqns):
        if eqn.effects or used.intersection(eqn.outvars):
            kept.append(eqn)
            used.update(v for v in eqn.invars if isinstance(v, jex.Var))
    pruned = jex.Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, kept[::-1], jaxpr.effects, jaxpr.debug_info)
    return jex.ClosedJaxpr(pruned, closed.consts)


def _read(alias: dict, atom):
    return atom if isinstance(atom, jex.Literal) else alias.get(atom, atom)


def _entry_of_stack(squeeze, made: dict):
    """w_k, if the equation `squeeze` drops axis 0 of `stack(w_0)` (k = 0), or
    of a slice that takes entry k of `stack(w_0, ..., w_n)` along axis 0 whole;
    else None."""
    if squeeze.primitive.name != "squeeze" or tuple(squeeze.params["dimensions"]) != (0,):
        return None
    piece = made.get(squeeze.invars[0])
    if piece is None:
        return None
    if _is_stack(piece) and len(piece.invars) == 1:
        return piece.invars[0]
    if piece.primitive.name != "slice" or not _is_stack(made.get(piece.invars[0])):
        return None
    start, limit, strides = (piece.params[key] for key in ("start_indices", "limit_indices", "strides"))
    shape = piece.invars[0].aval.shape
    whole = limit[0] == start[0] + 1 and not any(start[1:]) and tuple(limit[1:]) == tuple(shape[1:])
    return made[piece.invars[0]].invars[start[0]] if whole and strides in (None, (1,) * len(start)) else None


def _is_stack(eqn) -> bool:
    return eqn is not None and eqn.primitive.name == "stack" and eqn.params["axis"] == 0
