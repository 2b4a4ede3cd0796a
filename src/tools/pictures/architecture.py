"""show.py architecture: an experiment's network drawn from the network itself.

The network is built as training builds it (`model_params` of the resolved configuration, then
`FreesoundModel`'s or `StackingModel`'s network) and walked on one input of the shape training
feeds it: (1, 3, n_mels, crop_size) for a CNN, (1, experiments x classes) for the stacking MLP.
Its blocks are its direct sub-modules; torch.fx traces the data flow between them (with the
functional steps in between: concatenation, pooling, means, dropout), forward hooks on the
network's own forward record each block's output shape, and the traced graph must give the
network's outputs exactly, else nothing is drawn. So the picture stays true for every
architecture and every `--set` of the model: blocks in order with their output shapes and
parameters, the skip branches beside the trunk, the heads marked with their output number.

Layout: the longest path from the input to the main output is the trunk (the left column); a
block off it sits on the row of its deepest input, one column right of its inputs. Arrows
between rows far apart run in lanes between the columns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from src.config import AUDIO, ConfigError
from src.models import MODELS
from src.models.argus_models import FreesoundModel, StackingModel, model_params
from src.models.fcnet import FCNet
from src.tools.pictures.axes import DPI, save_figure

# Inches: box width and height, the gaps between columns and rows.
BOX_W, BOX_H, GAP_X, GAP_Y = 2.55, 0.8, 0.55, 0.24
LINE = 0.118  # inches per line of 7-point text
COLOURS = {"input": "#d9f0d3", "module": "#dbe9f6", "op": "#f0f0f0"}


@dataclass
class Block:
    """One box: a direct sub-module of the network, a run of functional steps, or the input."""

    name: str
    kind: str  # the module's class, the functional steps, or "input"
    shape: tuple[int, ...]
    parameters: int = 0
    inputs: list[str] = field(default_factory=list)
    role: str = "module"  # "module", "op" or "input"
    output: int | None = None  # its place in the network's outputs
    row: int = 0
    column: int = 0


@dataclass
class NetworkGraph:
    architecture: str
    input_shape: tuple[int, ...]
    blocks: list[Block]  # in execution order, the input first
    total: int  # sum(p.numel()) of the network
    own: int = 0  # parameters of the network that belong to no block
    input_note: str = ""  # what the input's axes are
    output_notes: dict[int, str] = field(default_factory=dict)

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)


# --------------------------------------------------------------------------------------
# Building and walking the network
# --------------------------------------------------------------------------------------


def build_network(config: dict, num_classes: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The experiment's network, as training builds it, and the shape of one training input."""
    name = config["model"]["name"]
    known = {"FCNet": FCNet} if config["kind"] == "stacking" else MODELS  # StackingModel's
    if name not in known:
        raise ConfigError(
            f"{config['name']}: unknown network {name!r} (model.name: {', '.join(known)})"
        )
    try:
        if config["kind"] == "stacking":
            in_channels = len(config["inputs"]) * num_classes
            params = model_params(config, num_classes, "cpu", in_channels=in_channels)
            return StackingModel(params).nn_module, (1, in_channels)
        params = model_params(config, num_classes, "cpu")
        network = FreesoundModel(params).nn_module
    except (TypeError, ValueError, KeyError, RuntimeError, ZeroDivisionError) as error:
        raise ConfigError(f"{config['name']}: cannot build the network {name}: {error}") from None
    return network, (1, 3, AUDIO.n_mels, int(config["crop_size"]))


def _shape(value: object) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return ()


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return False


def _argument(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return repr(value)


def op_text(node: fx.Node) -> str:
    """'cat(dim=1)', 'mean(dim=2)', 'transpose(1, 2)': the step and its settings."""
    target = node.target if isinstance(node.target, str) else node.target.__name__
    args = [
        _argument(a)
        for a in node.args
        if not isinstance(a, fx.Node) and not (isinstance(a, tuple | list) and a)
    ]
    # The network is traced in eval mode: dropout's `training` flag says nothing of training.
    args += [
        f"{k}={_argument(v)}"
        for k, v in node.kwargs.items()
        if not isinstance(v, fx.Node) and k not in ("training", "inplace")
    ]
    return f"{target}({', '.join(args)})"


class _BlockTracer(fx.Tracer):
    """Traces through the network's own forward, keeping its direct sub-modules whole."""

    def __init__(self, blocks: set[str]) -> None:
        super().__init__()
        self.blocks = blocks

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.blocks or super().is_leaf_module(module, qualified_name)


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, object] = {}

    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        self.values[node.name] = value
        return value


def network_graph(network: nn.Module, input_shape: Sequence[int]) -> NetworkGraph:
    """The blocks of `network` in execution order with their inputs, output shapes and
    parameters, laid out in rows and columns (see the module's docstring)."""
    network.eval()
    children = dict(network.named_children())
    architecture = type(network).__name__
    try:
        traced = fx.GraphModule(network, _BlockTracer(set(children)).trace(network))
    except Exception as error:  # fx raises many types for code it cannot trace
        raise ConfigError(f"{architecture}: cannot trace its data flow ({error})") from None
    x = torch.zeros(*input_shape)
    shapes: dict[str, list[tuple[int, ...]]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.setdefault(name, []).append(_shape(out))
        )
        for name, module in children.items()
    ]
    try:
        with torch.no_grad():
            expected = network(x)
            hooked = {name: list(found) for name, found in shapes.items()}
            recorder = _Recorder(traced)
            got = recorder.run(x)
    except RuntimeError as error:
        shape = tuple(input_shape)
        raise ConfigError(f"{architecture}: fails on an input of {shape}: {error}") from None
    finally:
        for hook in hooks:
            hook.remove()
    if not _same(expected, got):
        raise ConfigError(f"{architecture}: its traced data flow does not reproduce its outputs")

    blocks: dict[str, Block] = {}
    alias: dict[str, str] = {}  # fx node -> the block that holds it
    users = {node.name: len(node.users) for node in traced.graph.nodes}
    counted: set[str] = set()
    calls: dict[str, int] = {}
    outputs: list[str] = []
    for node in traced.graph.nodes:
        inputs = [alias[n.name] for n in node.all_input_nodes]
        if node.op == "placeholder":
            blocks[node.name] = Block("input", "input", tuple(input_shape), role="input")
            alias[node.name] = "input"
        elif node.op == "call_module":
            target = str(node.target)
            call = calls.get(target, 0)
            calls[target] = call + 1
            module = traced.get_submodule(target)
            parameters = 0
            if target not in counted:  # a block used twice is counted once
                parameters = sum(p.numel() for p in module.parameters())
                counted.add(target)
            shape = hooked[target][call] if target in hooked else _shape(recorder.values[node.name])
            blocks[node.name] = Block(node.name, type(module).__name__, shape, parameters, inputs)
            alias[node.name] = node.name
        elif node.op == "output":
            results = node.args[0]
            results = results if isinstance(results, tuple | list) else (results,)
            outputs = [alias[r.name] for r in results if isinstance(r, fx.Node)]
        else:
            shape = _shape(recorder.values[node.name])
            single = len(inputs) == 1 and blocks[inputs[0]].role == "op"
            if single and users[node.all_input_nodes[0].name] == 1:
                previous = blocks[inputs[0]]  # a run of steps is one box
                previous.kind = f"{previous.kind} -> {op_text(node)}"
                previous.shape = shape
                alias[node.name] = previous.name
            else:
                blocks[node.name] = Block(node.name, op_text(node), shape, 0, inputs, "op")
                alias[node.name] = node.name
    for index, name in enumerate(outputs):
        if blocks[name].output is None:
            blocks[name].output = index
    total = sum(p.numel() for p in network.parameters())
    ordered = list(blocks.values())
    graph = NetworkGraph(
        architecture,
        tuple(input_shape),
        ordered,
        total,
        total - sum(b.parameters for b in ordered),
    )
    lay_out(graph, outputs[0] if outputs else ordered[-1].name)
    return graph


def lay_out(graph: NetworkGraph, main_output: str) -> None:
    """Rows and columns: the trunk (longest path to `main_output`) in column 0, one row per
    block; any other block on the row of its deepest input, right of its inputs."""
    depth: dict[str, int] = {}
    previous: dict[str, str | None] = {}
    for block in graph.blocks:
        parents = [p for p in block.inputs if p in depth]
        best = max(parents, key=lambda p: depth[p], default=None)
        depth[block.name] = depth[best] + 1 if best is not None else 0
        previous[block.name] = best
    trunk, name = [], main_output
    while name is not None:
        trunk.append(name)
        name = previous[name]
    trunk.reverse()
    taken: set[tuple[int, int]] = set()
    placed: dict[str, Block] = {}
    for block in graph.blocks:
        if block.name in trunk:
            block.row, block.column = trunk.index(block.name), 0
        else:
            parents = [placed[p] for p in block.inputs if p in placed]
            block.row = max((p.row for p in parents), default=0)
            block.column = max((p.column for p in parents), default=0) + 1
            while (block.row, block.column) in taken:
                block.column += 1
        taken.add((block.row, block.column))
        placed[block.name] = block


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def shape_text(shape: Sequence[int]) -> str:
    return " x ".join(map(str, shape)) if shape else "-"


def _centre(block: Block) -> tuple[float, float]:
    return block.column * (BOX_W + GAP_X), -block.row * (BOX_H + GAP_Y)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _box_lines(graph: NetworkGraph, block: Block) -> tuple[str, list[str]]:
    """The bold first line and the others."""
    if block.role == "input":
        return "input", [shape_text(block.shape)]
    if block.role == "op":
        return "", [block.kind, shape_text(block.shape)]
    lines = [block.kind, shape_text(block.shape), _plural(block.parameters, "parameter")]
    if block.output is not None:
        note = graph.output_notes.get(block.output, "")
        lines.append(f"-> output {block.output}" + (f" ({note})" if note else ""))
    return block.name, lines


def architecture_figure(graph: NetworkGraph, title: str = ""):
    """The diagram; the title states the parameter total (the network's sum of numel)."""
    from matplotlib.patches import FancyBboxPatch

    from src.plots import plt

    columns = max(b.column for b in graph.blocks) + 1
    rows = max(b.row for b in graph.blocks) + 1
    width = columns * (BOX_W + GAP_X) - GAP_X
    height = rows * (BOX_H + GAP_Y) - GAP_Y
    figure = plt.figure(figsize=(width + 0.4, height + 1.1))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(-BOX_W / 2 - 0.2, width - BOX_W / 2 + 0.2)
    axis.set_ylim(-height + BOX_H / 2 - 0.2, BOX_H / 2 + 0.9)
    axis.set_axis_off()
    for block in graph.blocks:
        x, y = _centre(block)
        heads = block.output is not None
        axis.add_patch(
            FancyBboxPatch(
                (x - BOX_W / 2, y - BOX_H / 2),
                BOX_W,
                BOX_H,
                boxstyle="round,pad=0,rounding_size=0.06",
                facecolor=COLOURS[block.role],
                edgecolor="tab:red" if heads else "0.35",
                linewidth=1.6 if heads else 0.8,
            )
        )
        bold, lines = _box_lines(graph, block)
        top = y + LINE * (len(lines) + bool(bold)) / 2
        if bold:
            axis.text(x, top, bold, ha="center", va="top", fontsize=7.5, weight="bold")
            top -= LINE
        axis.text(x, top, "\n".join(lines), ha="center", va="top", fontsize=7, linespacing=1.2)
    _draw_edges(axis, graph)
    total = f"{graph.total:,} parameters"
    if graph.own:
        total += f" ({graph.own:,} outside the blocks)"
    heading = title or graph.architecture
    axis.text(
        -BOX_W / 2,
        BOX_H / 2 + 0.85,
        f"{heading}: {total}",
        ha="left",
        va="top",
        fontsize=9.5,
        weight="bold",
    )
    axis.text(
        -BOX_W / 2,
        BOX_H / 2 + 0.55,
        f"input {shape_text(graph.input_shape)} ({graph.input_note}); each block's output "
        "shape is for this input",
        ha="left",
        va="top",
        fontsize=8,
    )
    return figure


def _draw_edges(axis, graph: NetworkGraph) -> None:
    blocks = {b.name: b for b in graph.blocks}
    edges = [(blocks[p], b) for b in graph.blocks for p in b.inputs]
    long = [
        (p, n)
        for p, n in edges
        if not (p.row == n.row or (p.column == n.column and n.row == p.row + 1))
    ]
    # Lanes in the gap right of the leftmost column an edge touches, outermost entering lowest.
    lanes: dict[int, list[tuple[Block, Block]]] = {}
    for edge in long:
        lanes.setdefault(min(edge[0].column, edge[1].column), []).append(edge)
    arrow = {"arrowstyle": "-|>", "color": "0.25", "lw": 0.9, "shrinkA": 0, "shrinkB": 0}
    for p, n in edges:
        (px, py), (nx, ny) = _centre(p), _centre(n)
        if p.column == n.column and n.row == p.row + 1:
            axis.annotate("", (nx, ny + BOX_H / 2), (px, py - BOX_H / 2), arrowprops=arrow)
        elif p.row == n.row:
            side = BOX_W / 2 if nx > px else -BOX_W / 2
            axis.annotate("", (nx - side, ny), (px + side, py), arrowprops=arrow)
    skip = {**arrow, "color": "tab:orange"}
    for column, members in lanes.items():
        for index, (p, n) in enumerate(members):
            (px, py), (nx, ny) = _centre(p), _centre(n)
            lane = column * (BOX_W + GAP_X) + BOX_W / 2 + GAP_X * (index + 1) / (len(members) + 1)
            entry = ny + BOX_H * (0.3 - 0.6 * (index + 1) / (len(members) + 1))
            if p.column > column:  # back towards the left: leave from the bottom
                start = px - BOX_W / 4
                below = py - BOX_H / 2 - GAP_Y / 2
                points = [(start, py - BOX_H / 2), (start, below), (lane, below), (lane, entry)]
            else:  # leave from the right side
                points = [(px + BOX_W / 2, py - BOX_H / 4), (lane, py - BOX_H / 4), (lane, entry)]
            end_x = nx + BOX_W / 2 if n.column == column else nx - BOX_W / 2
            xs, ys = zip(*points)
            axis.plot(xs, ys, color="tab:orange", lw=0.9, solid_joinstyle="miter")
            axis.annotate("", (end_x, entry), points[-1], arrowprops=skip)


def output_notes(config: dict) -> dict[int, str]:
    """What each output is for: the main head, and the auxiliary heads' loss weights."""
    weights = config.get("aux_weights") or []
    notes = {0: "main"}
    for index, weight in enumerate(weights[1:], start=1):
        notes[index] = f"auxiliary, loss weight {weight:g}"
    return notes


def describe_config(config: dict) -> str:
    overrides = "" if "overrides" not in config else ", with overrides"
    scale = config.get("scale", "full")
    return f"{config['model']['name']} of {config['name']} (scale {scale}{overrides})"


def experiment_graph(config: dict, num_classes: int) -> NetworkGraph:
    network, shape = build_network(config, num_classes)
    graph = network_graph(network, shape)
    if config["kind"] == "cnn":
        graph.output_notes = output_notes(config)
        graph.input_note = "batch, [log-mel, delta, delta-delta], mel bands, frames"
    else:
        graph.output_notes = {0: "main"}
        graph.input_note = (
            f"batch, {len(config['inputs'])} experiments' mean tile probabilities x "
            f"{num_classes} classes"
        )
    return graph


def show_architecture(
    config: dict, out: str | os.PathLike, num_classes: int, dpi: int = DPI
) -> list[str]:
    """Build, walk, draw and write `out`; returns what to tell the user."""
    graph = experiment_graph(config, num_classes)
    save_figure(architecture_figure(graph, describe_config(config)), out, dpi)
    return [f"{graph.architecture}, {graph.total:,} parameters: {out}"]


def parameter_table(graph: NetworkGraph) -> Mapping[str, int]:
    """Block name -> parameters, in execution order (modules only)."""
    return {b.name: b.parameters for b in graph.blocks if b.role == "module"}
