"""What a model file's graph shows by itself: input and output names, types and shapes. Used to
check a graph against its contract, and to read a plain velocity ONNX that has no fm.* metadata
(docs/contract.md, "Files without metadata")."""
from __future__ import annotations

from ..definitions import CONTRACT
from ..errors import ModelError
from .spec import NAMES, ModelSpec

DTYPES: dict[str, str] = CONTRACT["input_dtypes"]     # an extra input's dtype -> onnxruntime's type name


def io_table(args) -> dict:
    """{name: (type, shape)} of onnxruntime's NodeArg list (session.get_inputs()/get_outputs())."""
    return {a.name: (a.type, list(a.shape)) for a in args}


def _graph_io(where: str, name: str, ios: dict, role: str):
    if name not in ios:
        raise ModelError(f"{where}: the graph has no {role} named {name!r} "
                         f"(it has: {', '.join(ios) or 'none'})", field=name)
    return ios[name]


def plain_spec(where, inputs, outputs, data_shape, x_name, t_name) -> ModelSpec:
    """A velocity ONNX with no fm.* metadata: infer what the graph shows, ask for the rest."""
    names = list(inputs)
    if x_name is None or t_name is None:
        if len(names) != 2:
            raise ModelError(f"{where}: no fm.* metadata and the graph has {len(names)} inputs "
                             f"({', '.join(names)}); pass --x-name and --t-name")
        if x_name is None and t_name is None:
            # t is the input shaped [B] or [B, 1]; x is the other one
            t_like = [n for n in names if len(inputs[n][1]) == 1
                      or (len(inputs[n][1]) == 2 and inputs[n][1][1] == 1)]
            if NAMES.x in names and NAMES.t in names:
                x_name, t_name = NAMES.x, NAMES.t
            elif len(t_like) == 1:
                t_name = t_like[0]
                x_name = next(n for n in names if n != t_name)
            else:
                raise ModelError(f"{where}: no fm.* metadata and cannot tell which of the inputs "
                                 f"{', '.join(names)} is x and which is t; pass --x-name and --t-name")
        elif x_name is None:
            x_name = next(n for n in names if n != t_name)
        else:
            t_name = next(n for n in names if n != x_name)
    x_shape = _graph_io(where, x_name, inputs, "input")[1]
    if data_shape is None:
        static = x_shape[1:]
        if not static or not all(isinstance(s, int) for s in static):
            raise ModelError(f"{where}: no fm.* metadata and the graph does not fix the data shape "
                             f"(input {x_name!r} has shape {x_shape}); pass --dim")
        data_shape = tuple(static)
    if len(outputs) != 1:
        raise ModelError(f"{where}: no fm.* metadata and the graph has {len(outputs)} outputs; "
                         "a velocity model has exactly one")
    return ModelSpec(tuple(data_shape), x_name, t_name, next(iter(outputs)))


def check_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    if spec.kind == "baked":
        _check_baked_graph(where, spec, inputs, outputs)
    else:
        _check_velocity_graph(where, spec, inputs, outputs)


def _check_shape(where: str, role: str, name: str, shape: list, data_shape: tuple[int, ...]) -> None:
    want = len(data_shape) + 1
    if len(shape) != want:
        raise ModelError(f"{where}: {role} {name!r} has rank {len(shape)}, expected {want} "
                         f"([batch, {', '.join(map(str, data_shape))}])", field=name)
    for got, exp in zip(shape[1:], data_shape):     # a symbol (str) is checked per request
        if isinstance(got, int) and isinstance(exp, int) and got != exp:
            raise ModelError(f"{where}: {role} {name!r} has shape {shape}, but the data shape "
                             f"is {list(data_shape)}", field=name)


def _check_baked_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    """A baked sampler takes noise z [B, *shape] and gives samples x [B, *shape], float32."""
    z_type, z_shape = _graph_io(where, spec.z_name, inputs, "input")
    x_type, x_shape = _graph_io(where, spec.out_name, outputs, "output")
    for role, name, typ in (("input", spec.z_name, z_type), ("output", spec.out_name, x_type)):
        if typ != "tensor(float)":
            raise ModelError(f"{where}: {role} {name!r} is {typ}; a baked sampler uses float32 (tensor(float))", field=name)
    extra = [n for n in inputs if n not in {spec.z_name, *(i["name"] for i in spec.inputs)}]
    if extra:
        raise ModelError(f"{where}: the graph has inputs this runtime does not feed: {', '.join(extra)}", field=extra[0])
    _check_declared(where, spec, inputs)
    _check_shape(where, "input", spec.z_name, z_shape, spec.data_shape)
    _check_shape(where, "output", spec.out_name, x_shape, spec.data_shape)


def _check_declared(where: str, spec: ModelSpec, inputs: dict) -> None:
    """Every input fm.inputs declares (contract version 4) is a graph input [batch, *shape] of its dtype."""
    for item in spec.inputs:
        typ, shape = _graph_io(where, item["name"], inputs, "input")
        if typ != DTYPES[item["dtype"]] or len(shape) != 1 + len(item["shape"]) or any(
                isinstance(g, int) and isinstance(d, int) and g != d for g, d in zip(shape[1:], item["shape"])):
            raise ModelError(f"{where}: input {item['name']!r} is {typ} {shape}; fm.inputs declares "
                             f"{item['dtype']} [batch, {', '.join(map(str, item['shape']))}]", field=item["name"])


def _check_velocity_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    """The graph must take x [B, *shape] and t [B] or [B, 1] as float32 and give v like x."""
    x_type, x_shape = _graph_io(where, spec.x_name, inputs, "input")
    t_type, t_shape = _graph_io(where, spec.t_name, inputs, "input")
    v_type, v_shape = _graph_io(where, spec.v_name, outputs, "output")
    for role, name, typ in (("input", spec.x_name, x_type), ("input", spec.t_name, t_type),
                            ("output", spec.v_name, v_type)):
        if typ != "tensor(float)":
            raise ModelError(f"{where}: {role} {name!r} is {typ}; a velocity model uses float32 (tensor(float))", field=name)
    fed = (spec.x_name, spec.t_name) + ((spec.s_name,) if spec.s_name else ()) + \
        ((spec.y_name,) if spec.num_classes else ()) + tuple(i["name"] for i in spec.inputs)
    if spec.s_name in (spec.x_name, spec.t_name):
        raise ModelError(f"{where}: fm.input_s names {spec.s_name!r}, the graph's x or t", field=spec.s_name)
    if spec.s_name:             # a flow map's start time: float32 shaped like t
        s_type, s_shape = _graph_io(where, spec.s_name, inputs, "input")
        if s_type != t_type or len(s_shape) != len(t_shape) or any(
                isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(s_shape[1:], t_shape[1:])):
            raise ModelError(f"{where}: the flow map's start-time input {spec.s_name!r} is {s_type} {s_shape}; "
                             f"expected it shaped like {spec.t_name!r} ({t_type} {t_shape})", field=spec.s_name)
    _check_declared(where, spec, inputs)
    if spec.num_classes:
        y_type, y_shape = _graph_io(where, spec.y_name, inputs, "input")
        if y_type != "tensor(int64)" or len(y_shape) != 1:
            raise ModelError(f"{where}: label input {spec.y_name!r} is {y_type} {y_shape}; expected int64 [batch]",
                             field=spec.y_name)
    extra = [n for n in inputs if n not in fed]
    if extra:
        raise ModelError(f"{where}: the graph has inputs this runtime does not feed: {', '.join(extra)}", field=extra[0])
    _check_shape(where, "input", spec.x_name, x_shape, spec.data_shape)
    _check_shape(where, "output", spec.v_name, v_shape, spec.data_shape)
    if len(t_shape) == 1:
        spec.t_rank = 1
    elif len(t_shape) == 2 and (t_shape[1] == 1 or not isinstance(t_shape[1], int)):
        spec.t_rank = 2
    else:
        raise ModelError(f"{where}: input {spec.t_name!r} has shape {t_shape}; expected [batch] or [batch, 1]",
                         field=spec.t_name)
