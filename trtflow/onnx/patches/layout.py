"""Layout patches: the NHWC input of a TF graph as NCHW."""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from trtflow.core.errors import TrtflowError
from trtflow.images.io import explain_image_layout
from trtflow.onnx.patches.graph import _bypass, _consumers, _fmt_shape, _name, _replace_input
from trtflow.onnx.patches.registry import PatchOptions, _change, register

log = logging.getLogger(__name__)


def _detection_layout(out: gs.Tensor, patch: str, options: PatchOptions) -> tuple[int, int]:
    """Return ``(channels, num_classes)`` of a ``[B, N, 5+C]`` detection output."""
    shape = out.shape
    if shape is None or len(shape) != 3:
        raise TrtflowError(
            f"{patch}: output {out.name!r} has shape {_fmt_shape(shape)}, expected [B,N,5+C]",
            "run sanitize first so the output shape is known, or check the model's output",
        )
    last = shape[-1]
    if options.num_classes is not None:
        if isinstance(last, int) and last != options.num_classes + 5:
            raise TrtflowError(
                f"{patch}: output {out.name!r} has {last} channels but num_classes is "
                f"{options.num_classes} (expected {options.num_classes + 5})",
                f"set num_classes to {last - 5} or leave it unset",
            )
        return options.num_classes + 5, options.num_classes
    if not isinstance(last, int) or last < 6:
        raise TrtflowError(
            f"{patch}: cannot infer the number of classes from output shape {_fmt_shape(shape)}",
            "set num_classes in the model's config",
        )
    return last, last - 5


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]


@register("nchw_input")
def nchw_input(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Make NHWC image inputs NCHW and delete the Transpose(0,3,1,2) tf2onnx put behind them.

    Every Transpose consuming the input is rewritten against the new NCHW input (its perm
    composed with NCHW->NHWC); those that become identities are removed, which covers tf2onnx
    pushing the transpose into several consumers. Other consumers of the NHWC tensor (e.g. a
    Shape) get one shared Transpose back to NHWC. Inputs without a leading Transpose(0,3,1,2)
    are left as they are, with the layout found and why in the log (a warning for NHWC).
    """
    patch = "nchw_input"
    for index, old in enumerate(list(graph.inputs)):
        consumers = _consumers(old)
        leading = [
            n
            for n in consumers
            if n.op == "Transpose" and list(n.attrs.get("perm", [])) == _TO_NCHW
        ]
        if old.shape is None or len(old.shape) != 4 or not leading:
            layout, evidence = explain_image_layout(old.shape, options.image_size)
            if layout == "NCHW":
                why = "already NCHW"
            elif leading:
                why = "its shape is not a known rank-4 shape, so no NCHW input can be declared"
            else:
                users = ", ".join(n.op for n in consumers) or "none"
                why = f"no Transpose(0,3,1,2) to remove among its consumers ({users})"
            (log.warning if layout == "NHWC" else log.info)(
                "%s: input %r %s is %s (%s): left as is, %s",
                patch, old.name, _fmt_shape(old.shape), layout, evidence, why,
            )  # fmt: skip
            continue
        name = old.name
        n, h, w, c = old.shape
        old.name = _name(patch, name, "nhwc")
        new = gs.Variable(name, dtype=old.dtype, shape=[n, c, h, w])
        graph.inputs[index] = new
        # old is now an internal NHWC tensor computed from the NCHW input.
        to_nhwc = gs.Node(
            "Transpose",
            name=_name(patch, name, "to_nhwc"),
            attrs={"perm": list(_TO_NHWC)},
            inputs=[new],
            outputs=[old],
        )
        graph.nodes.append(to_nhwc)
        removed, rewritten = 0, 0
        for node in consumers:
            if node.op != "Transpose":
                continue
            perm = list(node.attrs.get("perm", reversed(range(4))))
            composed = [_TO_NHWC[p] for p in perm]
            _replace_input(node, old, new)
            node.attrs["perm"] = composed
            if composed == [0, 1, 2, 3] and _bypass(graph, node, new):
                removed += 1
            else:
                rewritten += 1
        _change(
            patch,
            f"input {name!r} {_fmt_shape([n, h, w, c])} NHWC -> {_fmt_shape(new.shape)} NCHW; "
            f"removed {removed} Transpose(0,3,1,2)"
            + (f", re-permuted {rewritten} other Transpose" if rewritten else ""),
        )
        others = [node.op for node in _consumers(old)]
        if others:
            _change(
                patch,
                f"kept a Transpose to NHWC for {len(others)} NHWC consumer(s) of {name!r}: "
                + ", ".join(others),
            )
    graph.cleanup().toposort()
    return graph
