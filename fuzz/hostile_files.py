"""Model files crafted to break a runtime: valid ONNX with lying or oversized metadata, graphs
whose outputs contradict their declaration, memory bombs, runs that never end, escape
sequences for the terminal, and files that are not what they claim.

`corpus()` lists (class, name, writer, expected exit code: of `fm-run sample` when an int, per
command when a dict; other runs must exit with any documented code but 1); `write_corpus(folder)` writes them all. Used by fuzz/hostile.py.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from fm_runtime.model.contract import build_metadata, write_metadata

ESC = "\x1b[31m\x1b]0;owned\x07"          # colour, and a window-title sequence


def _vi(name, shape, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


def _const(name, values, elem=T.INT64):
    values = list(np.ravel(values))
    return h.make_tensor(name, elem, [len(values)], values)


def model(nodes=(), inits=(), shape=(2,), out="v", meta=None, inputs=None, outputs=None,
          opset=17, bake=None, **raw) -> onnx.ModelProto:
    """A velocity graph x [B, *shape], t [B] -> v (default v = 0.5 x), its fm.* metadata from
    build_metadata, then `raw` keys replaced by the given JSON text (None removes a key)."""
    if not nodes:
        nodes = [h.make_node("Mul", ["x", "half"], [out])]
        inits = [*inits, h.make_tensor("half", T.FLOAT, [], [0.5])]
    if bake:
        ins, outs = inputs or [_vi("z", ["B", *shape])], outputs or [_vi("x", ["B", *shape])]
    else:
        ins = inputs or [_vi("x", ["B", *shape]), _vi("t", ["B"])]
        outs = outputs or [_vi(out, ["B", *shape])]
    g = h.make_graph(list(nodes), "hostile", ins, outs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=9)
    values = build_metadata(data_shape=list(shape), path={"name": "ot"}, baked=bake, **(meta or {}))
    for k, v in raw.items():          # inputs_: the key fm.inputs (inputs names the graph's)
        key = "fm." + k.rstrip("_")
        if v is None:
            values.pop(key, None)
        else:
            values[key] = v
    write_metadata(m.metadata_props, values)
    return m


def baked(nodes, inits=(), **raw):
    return model(nodes, inits, bake={"solver": "euler", "steps": 1}, **raw)


def loop(inp: str, out: str, trips: int = 10**15) -> onnx.NodeProto:
    """out = inp after `trips` iterations of a body that multiplies by 1: a run that never ends."""
    body = h.make_graph(
        [h.make_node("Mul", ["xin", "one"], ["xout"]), h.make_node("Identity", ["cin"], ["cout"])], "body",
        [_vi("i", [], T.INT64), _vi("cin", [], T.BOOL), _vi("xin", None)],
        [_vi("cout", [], T.BOOL), _vi("xout", None)], [h.make_tensor("one", T.FLOAT, [], [1.0])])
    return h.make_node("Loop", [f"M_{out}", f"C_{out}", inp], [out], body=body)


def loop_inits(out: str, trips: int = 10**15):
    return [h.make_tensor(f"M_{out}", T.INT64, [], [trips]), h.make_tensor(f"C_{out}", T.BOOL, [], [True])]


def _nested_loops(outer: int, inner: int):
    """v = 0.5 x through a Loop of `outer` trips whose body runs a Loop of `inner` trips."""
    body = h.make_graph(
        [loop("xin", "xout", inner), h.make_node("Identity", ["cin"], ["cout"])], "outer",
        [_vi("i", [], T.INT64), _vi("cin", [], T.BOOL), _vi("xin", None)],
        [_vi("cout", [], T.BOOL), _vi("xout", None)], loop_inits("xout", inner))
    node = h.make_node("Loop", ["M_h", "C_h", "x"], ["h"], body=body)
    return ([node, h.make_node("Mul", ["h", "half"], ["v"])],
            [*loop_inits("h", outer), h.make_tensor("half", T.FLOAT, [], [0.5])])


def bomb(big: list) -> tuple[list, list]:
    """v = 0.5 x + 0 * sum(big tensor): `big` nodes make tensor 'big' from a tiny input."""
    nodes = [*big, h.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             h.make_node("Mul", ["s", "zero"], ["s0"]), h.make_node("Mul", ["x", "half"], ["hx"]),
             h.make_node("Add", ["hx", "s0"], ["v"])]
    return nodes, [h.make_tensor("zero", T.FLOAT, [], [0.0]), h.make_tensor("half", T.FLOAT, [], [0.5])]


def with_divergence(m: onnx.ModelProto, graph: bytes | str) -> onnx.ModelProto:
    text = graph if isinstance(graph, str) else base64.b64encode(graph).decode("ascii")
    for p in [p for p in m.metadata_props if p.key == "fm.divergence"]:
        m.metadata_props.remove(p)
    m.metadata_props.add(key="fm.divergence", value=json.dumps({"onnx_base64": text}))
    return m


def jvp_graph(jv_nodes, inits=()) -> bytes:
    """A divergence graph (x, t, e) -> (v, jv) with the given nodes making jv."""
    g = h.make_graph([h.make_node("Mul", ["x", "half"], ["v"]), *jv_nodes], "jvp",
                     [_vi("x", ["B", 2]), _vi("t", ["B"]), _vi("e", ["B", "K", 2])],
                     [_vi("v", ["B", 2]), _vi("jv", None)], [h.make_tensor("half", T.FLOAT, [], [0.5]), *inits])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9).SerializeToString()


def _bytes(m: onnx.ModelProto) -> bytes:
    return m.SerializeToString()


def _not_utf8() -> bytes:
    return _bytes(model(training='"PLACEHOLDER"')).replace(b"PLACEHOLDER", b"\xff\xfe\xfa\xfb\xfc\xfd\xfe\xff\xc0\xc1\xf5")


def _external() -> bytes:
    m = model()
    w = m.graph.initializer[0]
    w.ClearField("float_data")
    w.data_location = T.EXTERNAL
    w.external_data.add(key="location", value="../../etc/passwd")
    return _bytes(m)


def _claims_huge_weights() -> bytes:
    m = model()
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([10**6, 10**6])
    return _bytes(m)


def _meta(**raw):
    """A file whose fm.* keys in `raw` are replaced by the given JSON text (fm.inputs as inputs_)."""
    if "inputs" in raw:
        raw["inputs_"] = raw.pop("inputs")
    return lambda: _bytes(model(**raw))


SELFTEST = '{"inputs": {"x": [[1, 2]], "t": [0]}, "output": [[0.5, 1]]}'


def corpus() -> list[tuple[str, str, object, int | None]]:
    half = [h.make_tensor("half", T.FLOAT, [], [0.5])]
    c = []
    add = lambda cls, name, writer, expect=None: c.append((cls, name, writer, expect))   # noqa: E731

    # metadata that is valid JSON of the wrong shape, or too big, or lying
    for name, raw in {
        "nested_100k": {"training": "[" * 100_000 + "]" * 100_000},
        "nested_in_object": {"training": '{"a": ' + "[" * 200 + "]" * 200 + "}"},
        "integer_5000_digits": {"producer": '{"torch": ' + "9" * 5000 + "}"},
        "shape_4000_digits": {"data_shape": "[" + "9" * 4000 + "]"},
        "shape_40_gb_per_row": {"data_shape": "[100000, 100000]"},
        "rank_70": {"data_shape": json.dumps([1] * 70)},
        "shape_zero": {"data_shape": "[0]"},
        "shape_bool": {"data_shape": "[true, 2]"},
        "variant_wrong_types": {"variant": '{"precision": "fp16", "vs_fp32": {"size_bytes": "big"}}'},
        "architecture_strings": {"architecture": '{"type": "mlp", "dim": "2", "width": [], "depth": {}}'},
        "selftest_list": {"selftest": '[1, 2, 3]'},
        "selftest_unknown_input": {"selftest": '{"inputs": {"q": [[1, 2]]}, "output": [[1, 2]]}'},
        "selftest_ragged": {"selftest": '{"inputs": {"x": [[1], [1, 2]], "t": [0]}, "output": [[1, 2]]}'},
        "selftest_strings": {"selftest": '{"inputs": {"x": [["a", "b"]], "t": [0]}, "output": [[1, 2]]}'},
        "selftest_nan_atol": {"selftest": '{"inputs": {"x": [[1, 2]], "t": [0]}, "output": [[1, 2]], "atol": NaN}'},
        "selftest_mismatch": {"selftest": '{"inputs": {"x": [[1, 2]], "t": [0]}, "output": [[9, 9]]}'},
        "divergence_ops_int": {"divergence": '{"unsupported_ops": [1, 2]}'},
        "num_classes_no_label_input": {"num_classes": "10", "null_class": "10", "input_y": '"y"'},
        "null_class_out_of_range": {"num_classes": "3", "null_class": "99", "input_y": '"y"'},
        "value_range_nan": {"value_range": "[0, NaN]"},
        "format_version_huge": {"format_version": "1" + "0" * 100},
        "kind_unknown": {"kind": '"classifier"'},
        "training_2_mib": {"training": json.dumps("a" * (2 << 20))},
        "default_steps_billion": {"default_steps": "1000000000"},
        "default_steps_nan": {"default_steps": "NaN"},
        "prediction_list": {"prediction": "[]"},
        # contract version 4: extra inputs and symbols
        "input_the_graph_lacks": {"inputs": '[{"name": "mu", "dtype": "float32", "shape": [2], "role": "condition"}]'},
        "input_role_unknown": {"inputs": '[{"name": "mu", "dtype": "float32", "shape": [2], "role": "oracle"}]'},
        "input_shape_bomb": {"inputs": '[{"name": "mu", "dtype": "float32", "shape": [65536, 65536, 65536], '
                                       '"role": "condition"}]'},
        "inputs_5000": {"inputs": json.dumps([{"name": f"c{i}", "dtype": "float32", "shape": [], "role": "static"}
                                              for i in range(5000)])},
        "symbol_undeclared": {"data_shape": '["T"]'},
        "symbol_bounds_inverted": {"data_shape": '["T"]', "symbols": '{"T": {"min": 10, "max": 2}}'},
        "symbol_max_huge": {"data_shape": '["T"]', "symbols": '{"T": {"max": ' + "9" * 400 + "}}"},
        "symbol_named_escape": {"data_shape": '["T"]', "symbols": '{"T": {}, "\\u001b[31m": {}}'},
    }.items():
        add("metadata", name, _meta(**raw), 3)
    add("metadata", "not_utf8", _not_utf8, 3)
    add("metadata", "baked_missing_steps", lambda: _bytes(baked([h.make_node("Identity", ["z"], ["x"])], baked='{"solver": "euler"}')), 3)
    add("metadata", "baked_steps_text", lambda: _bytes(baked([h.make_node("Identity", ["z"], ["x"])], baked='{"solver": "euler", "steps": "1"}')), 3)
    add("metadata", "baked_nfe_lie", lambda: _bytes(baked([h.make_node("Identity", ["z"], ["x"])], baked='{"solver": "euler", "steps": 1, "nfe": 1000}')), 3)
    add("metadata", "label_input_undeclared", lambda: _bytes(model(
        inputs=[_vi("x", ["B", 2]), _vi("t", ["B"]), _vi("y", ["B"], T.INT64)])), 3)
    add("metadata", "divergence_not_base64", lambda: _bytes(with_divergence(model(), "%%% not base64 %%%")), {"logprob": 3})
    add("metadata", "divergence_garbage_graph", lambda: _bytes(with_divergence(model(), os.urandom(2000))), {"logprob": 3})

    # graphs whose outputs contradict what they declare
    s0, s1 = _const("s0", [0]), _const("s1", [1])
    add("lies", "baked_one_row", lambda: _bytes(baked([h.make_node("Slice", ["z", "s0", "s1"], ["x"])], [s0, s1])), 3)
    add("lies", "baked_rows_doubled", lambda: _bytes(baked([h.make_node("Concat", ["z", "z"], ["x"], axis=0)])), 3)
    add("lies", "velocity_one_row", lambda: _bytes(model([h.make_node("Slice", ["x", "s0", "s1"], ["v"])], [s0, s1],
                                                        outputs=[_vi("v", [None, 2])])), 3)
    add("lies", "velocity_wider", lambda: _bytes(model([h.make_node("Concat", ["x", "x"], ["v"], axis=1)],
                                                      outputs=[_vi("v", ["B", None])])), 3)
    add("lies", "velocity_rank_3", lambda: _bytes(model([h.make_node("Unsqueeze", ["x", "s1"], ["v"])], [s1],
                                                       outputs=[_vi("v", ["B", None])])), 3)
    add("lies", "label_table_too_small", lambda: _bytes(model(
        [h.make_node("Gather", ["table", "y"], ["row"], axis=0), h.make_node("Add", ["x", "row"], ["v"])],
        [h.make_tensor("table", T.FLOAT, [2, 2], [0.0] * 4)], meta={"num_classes": 3},
        inputs=[_vi("x", ["B", 2]), _vi("t", ["B"]), _vi("y", ["B"], T.INT64)])), 3)
    add("lies", "architecture_huge", _meta(architecture=json.dumps({"type": "mlp", "dim": 2, "width": 2**31 - 1,
                                                                      "depth": 2**31 - 1})), {"bench": 0})
    add("lies", "velocity_infinite", lambda: _bytes(model([h.make_node("Div", ["x", "zero"], ["v"])],
                                                         [h.make_tensor("zero", T.FLOAT, [], [0.0])])), 5)
    add("lies", "divergence_wrong_shape", lambda: _bytes(with_divergence(model(), jvp_graph(
        [h.make_node("ReduceSum", ["e", "s1"], ["jv"], keepdims=0)], [s1]))), {"logprob": 3})

    # graphs that allocate gigabytes from a tiny input
    add("bombs", "constant_of_shape_40_gb", lambda: _bytes(model(*_cos_bomb())), 9)
    add("bombs", "expand_huge", lambda: _bytes(model(*_with(bomb([h.make_node("Expand", ["one", "eshape"], ["big"])]), [
        _const("eshape", [100000, 100000]), h.make_tensor("one", T.FLOAT, [1], [1.0])]))), 9)
    add("bombs", "tile_huge", lambda: _bytes(model(*_with(bomb([h.make_node("Tile", ["x", "reps"], ["big"])]),
                                                        [_const("reps", [4_000_000, 1])]))), 9)
    add("bombs", "selftest_bomb", lambda: _bytes(model(*_cos_bomb(), selftest=SELFTEST)), {"sample": 9, "info": 9})
    add("bombs", "range_huge", lambda: _bytes(model(*_with(bomb([h.make_node("Range", ["r0", "r1", "r2"], ["big"])]), [
        h.make_tensor("r0", T.FLOAT, [], [0.0]), h.make_tensor("r1", T.FLOAT, [], [1e11]),
        h.make_tensor("r2", T.FLOAT, [], [1.0])]))), 9)
    add("bombs", "concat_doubling_40", lambda: _bytes(model(*_doubling(40))), 9)
    add("bombs", "resize_huge", lambda: _bytes(model(*_resize_bomb())), 9)
    add("bombs", "broadcast_outer", lambda: _bytes(model(*_outer_bomb())), 9)
    add("bombs", "many_medium_constants", lambda: _bytes(model(*_many_constants(24))), 9)
    add("bombs", "row_of_100_mb", lambda: _bytes(model([h.make_node("Reshape", ["x", "rshape"], ["v"])],
                                                     [_const("rshape", [-1, 25_000_000])], shape=(25_000_000,))), 9)
    add("bombs", "expand_by_input_shape", lambda: _bytes(model(*_with(bomb([
        h.make_node("Shape", ["x"], ["sx"]), h.make_node("Mul", ["sx", "k"], ["eshape"]),
        h.make_node("Expand", ["one", "eshape"], ["big"])]), [_const("k", [20000, 5000]),
                                                              h.make_tensor("one", T.FLOAT, [1], [1.0])]))), 9)
    add("lies", "class_grid", lambda: _bytes(model(*_labelled(2_147_483_646), shape=(8, 8), meta={"num_classes": 2_147_483_646},
                                                     inputs=[_vi("x", ["B", 8, 8]), _vi("t", ["B"]), _vi("y", ["B"], T.INT64)])),
        {"grid": 2})

    # runs that never end: a Loop the file does not bound is refused at load (exit 3) unless
    # --allow-loops; one with a small fixed trip count runs
    add("endless", "velocity_loop", lambda: _bytes(model([loop("x", "v")], loop_inits("v"))), 3)
    add("endless", "baked_loop", lambda: _bytes(baked([loop("z", "x")], loop_inits("x"))), 3)
    add("endless", "selftest_loop", lambda: _bytes(model([loop("x", "v")], loop_inits("v"), selftest=SELFTEST)),
        {"sample": 3, "info": 3})
    add("endless", "divergence_loop", lambda: _bytes(with_divergence(model(), jvp_graph(
        [loop("e", "jv")], loop_inits("jv")))), {"logprob": 3})
    add("endless", "trips_from_the_input", lambda: _bytes(model(
        [h.make_node("Shape", ["x"], ["s"]), h.make_node("ReduceProd", ["s"], ["M_v"], keepdims=0), loop("x", "v")],
        loop_inits("v")[1:])), 3)
    add("endless", "nested_1000x1000", lambda: _bytes(model(*_nested_loops(1000, 1000))), 3)
    add("endless", "small_fixed_loop", lambda: _bytes(model([loop("x", "h"), h.make_node("Mul", ["h", "half"], ["v"])],
                                                           [*loop_inits("h", 4), *half], selftest=SELFTEST)), 0)

    # text meant for the terminal
    add("terminal", "escape_in_training", _meta(training=json.dumps({"note": ESC, "dataset": "moons" + ESC})), 0)
    add("terminal", "escape_in_kind", _meta(kind=json.dumps("velocity" + ESC)), 3)
    add("terminal", "escape_in_solver", _meta(default_solver=json.dumps("euler" + ESC)), 3)
    add("terminal", "escape_in_input_name", lambda: _bytes(model(
        [h.make_node("Mul", ["x" + ESC, "half"], ["v"])], half, inputs=[_vi("x" + ESC, ["B", 2]), _vi("t", ["B"])],
        input_x=json.dumps("x" + ESC))), 0)
    add("terminal", "escape_in_failing_node", lambda: _bytes(model(
        [h.make_node("Reshape", ["x", "bad"], ["v"], name="node" + ESC)], [_const("bad", [3, 5])])), 3)
    add("terminal", "escape_in_unsupported_ops", _meta(divergence=json.dumps({"unsupported_ops": ["Atan" + ESC]})), 0)
    add("terminal", "escape_in_missing_input", _meta(input_t=json.dumps("time" + ESC)), 3)

    # files that are not what they claim
    add("files", "empty", lambda: b"", 3)
    add("files", "random_bytes", lambda: np.random.default_rng(0).bytes(4096), 3)
    add("files", "truncated", lambda: _bytes(model())[:200], 3)
    add("files", "zip_archive", lambda: b"PK\x03\x04" + bytes(200), 3)
    add("files", "external_data_escape", _external, 3)
    add("files", "custom_operator", lambda: _bytes(model([h.make_node("Evil", ["x"], ["v"], domain="com.evil")])), 3)
    add("files", "future_opset", lambda: _bytes(model(opset=99)), 3)
    add("files", "weights_claim_terabytes", _claims_huge_weights, 3)
    add("files", "no_outputs", _no_outputs, 3)
    add("files", "sparse_3_gib", "sparse", 3)
    add("files", "a_directory", "directory", 3)
    add("files", "a_fifo", "fifo", 3)
    return c


def _with(graph: tuple[list, list], more: list) -> tuple[list, list]:
    return graph[0], graph[1] + more


def _cos_bomb():
    return _with(bomb([h.make_node("ConstantOfShape", ["shp"], ["big"],
                                   value=h.make_tensor("one", T.FLOAT, [1], [1.0]))]), [_const("shp", [100000, 100000])])


def _labelled(classes: int):
    """v = 0.5 x for a class-conditional file of `classes` classes (its label read, not used)."""
    return ([h.make_node("Mul", ["x", "half"], ["v"]), h.make_node("Identity", ["y"], ["y_seen"])],
            [h.make_tensor("half", T.FLOAT, [], [0.5])])


def _doubling(levels: int):
    nodes = [h.make_node("Identity", ["x"], ["d0"])]
    nodes += [h.make_node("Concat", [f"d{i}", f"d{i}"], [f"d{i + 1}"], axis=0) for i in range(levels)]
    nodes.append(h.make_node("Identity", [f"d{levels}"], ["big"]))
    return bomb(nodes)


def _resize_bomb():
    return _with(bomb([h.make_node("Unsqueeze", ["x", "ax"], ["x4"]),
                       h.make_node("Resize", ["x4", "", "scales"], ["big"], mode="nearest")]),
                 [_const("ax", [1, 2]), h.make_tensor("scales", T.FLOAT, [4], [1.0, 1.0, 30000.0, 30000.0])])


def _outer_bomb():
    """Two thin constants whose sum broadcasts to 40 GB: [100000, 1] + [1, 100000]."""
    return _with(bomb([h.make_node("Expand", ["one", "col"], ["a"]), h.make_node("Expand", ["one", "row"], ["b"]),
                       h.make_node("Add", ["a", "b"], ["big"])]),
                 [_const("col", [100000, 1]), _const("row", [1, 100000]), h.make_tensor("one", T.FLOAT, [1], [1.0])])


def _many_constants(count: int):
    """`count` constants of 16 MiB each, each fine alone, folded into one sum at load."""
    nodes = [h.make_node("ConstantOfShape", ["shp"], [f"c{i}"], value=h.make_tensor("one", T.FLOAT, [1], [1.0]))
             for i in range(count)]
    nodes.append(h.make_node("Sum", [f"c{i}" for i in range(count)], ["big"]))
    return _with(bomb(nodes), [_const("shp", [4096, 1024])])


def _no_outputs() -> bytes:
    m = model()
    del m.graph.output[:]
    return _bytes(m)


def write_corpus(folder: str | os.PathLike) -> list[dict]:
    """Write every file of the corpus into `folder`; returns [{class, name, path, expect}]."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for cls, name, writer, expect in corpus():
        p = folder / f"{cls}-{name}.onnx"
        if writer == "sparse":
            with open(p, "wb") as f:
                f.truncate(3 << 30)             # 3 GiB of holes: takes no disk
        elif writer == "directory":
            p.mkdir(exist_ok=True)
        elif writer == "fifo":
            if not p.exists():
                os.mkfifo(p)
        else:
            p.write_bytes(writer())
        out.append({"class": cls, "name": name, "path": str(p), "expect": expect})
    return out
