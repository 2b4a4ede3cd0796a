"""A checkpoint's network as ONNX, and predicting with it through ONNX Runtime.

`export_checkpoint` writes the network of a checkpoint (float32, eval mode) with a dynamic
batch axis. The graph ends with the prediction transform, so it outputs what `model.predict`
does: the sigmoid of the main head (CNNs: input (B, 3, n_mels, crop), the tile after the
validation transform; stacking MLPs: input (B, in_channels)). A CNN's graph has a second
output, `embedding`: the pooled features the main head sees (the network's `embed`). The
classes, the crop and the source checkpoint are stored in the file's metadata, so it runs
without the checkpoint. After export the file is checked against PyTorch (both outputs) on
random inputs of batch sizes 1 and 3.

`OnnxPredictor` is `Predictor` with ONNX Runtime in place of PyTorch: the same tiles and the
same validation transform in torch, then the session.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.config import AUDIO, ConfigError
from src.library_internals import plain_module
from src.prediction.tiling import Predictor, load_checkpoint
from src.runs import checkpoint_classes
from src.tools.tagging.sources import ModelSource, Tags
from src.utils import tmp_name

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"  # the second output of a CNN's graph
TOLERANCE = 1e-4


class Probabilities(nn.Module):
    """The network followed by its prediction transform (sigmoid of the main output); for a
    CNN also its embedding (the main head is applied to it, so the trunk runs once)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.embeds = hasattr(network, "embed")

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.embeds:
            embedding = self.network.embed(x)
            return torch.sigmoid(self.network.fc(embedding)), embedding
        output = self.network(x)
        main = output if isinstance(output, torch.Tensor) else output[0]
        return torch.sigmoid(main)


def output_names(network: Probabilities) -> list[str]:
    return [OUTPUT_NAME, EMBEDDING_NAME] if network.embeds else [OUTPUT_NAME]


@dataclass
class ExportReport:
    path: Path
    architecture: str
    input_shape: tuple[int, ...]
    max_difference: float
    seconds: float


def _example_input(params: dict, batch: int) -> torch.Tensor:
    kwargs = params["nn_module"][1]
    if "in_channels" in kwargs:  # the stacking MLP
        return torch.rand(batch, int(kwargs["in_channels"]))
    crop = int(params.get("crop_size", 256))
    return torch.randn(batch, 3, AUDIO.n_mels, crop)


def export_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, opset: int = OPSET
) -> ExportReport:
    """Write `out` (default: the checkpoint's path with .onnx) and check it with ONNX Runtime."""
    import onnx  # here, not at the top: only exporting needs it

    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint.with_suffix(".onnx")
    model = load_checkpoint(checkpoint, "cpu", amp="off")
    params = model.params
    network = Probabilities(plain_module(model.get_nn_module())).eval()
    num_classes = int(params["nn_module"][1]["num_classes"])
    started = time.perf_counter()
    example = _example_input(params, 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    with torch.no_grad(), warnings.catch_warnings():
        # The LSTM warns that other batch sizes may fail: checked below with batch 1 and 3.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*LSTM")
        # The TorchScript-based exporter: no onnxscript needed, and LSTMs export as one node.
        torch.onnx.export(
            network,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=output_names(network),
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *output_names(network)]},
        )
    graph = onnx.load(str(tmp))
    metadata = {
        "architecture": params["nn_module"][0],
        "classes": json.dumps(list(checkpoint_classes(checkpoint, num_classes))),
        "crop_size": str(int(params.get("crop_size", 256))),
        "source_checkpoint": checkpoint.name,
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp))
    difference = max(
        check_against_torch(tmp, network, _example_input(params, batch)) for batch in (1, 3)
    )
    os.replace(tmp, out)
    return ExportReport(
        out,
        params["nn_module"][0],
        tuple(example.shape[1:]),
        difference,
        time.perf_counter() - started,
    )


def check_against_torch(path: Path, network: Probabilities, x: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on `x` (the probabilities
    of the network's own forward, and a CNN's `embed`); fails above TOLERANCE."""
    session = make_session(path)
    plain = network.network
    with torch.no_grad():
        output = plain(x)
        main = output if isinstance(output, torch.Tensor) else output[0]
        expected = [torch.sigmoid(main).numpy()]
        if network.embeds:
            expected.append(plain.embed(x).numpy())
    got = session.run(output_names(network), {INPUT_NAME: x.numpy()})
    difference = 0.0
    for name, ours, theirs in zip(output_names(network), got, expected, strict=True):
        difference = max(difference, float(np.abs(ours - theirs).max()))
        if ours.shape != theirs.shape or not difference <= TOLERANCE:
            Path(path).unlink(missing_ok=True)
            raise ConfigError(
                f"ONNX Runtime disagrees with PyTorch ({name}): shape {ours.shape} vs "
                f"{theirs.shape}, max difference {difference:.2e} (tolerance {TOLERANCE:g})"
            )
    return difference


def make_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime  # here, not at the top: the module loads without it

    options = onnxruntime.SessionOptions()
    threads = threads if threads is not None else torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


class OnnxPredictor(Predictor):
    """`Predictor` with an exported network: the same tiles, batches and output checks, then
    ONNX Runtime (CPU) in place of torch."""

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int = 64,
        tile_step: int | None = None,
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: ONNX model not found")
        self.path = path
        self.name = str(path)
        try:
            self.session = make_session(path, threads)
        except Exception as error:  # onnxruntime's own exception types: not an ONNX graph
            hint = "a checkpoint: give it to --model" if path.suffix == ".pth" else "not ONNX"
            reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            raise ConfigError(f"{path}: {hint} ({reason})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "crop_size" not in metadata or "classes" not in metadata:
            raise ConfigError(f"{path}: not exported by export_onnx.py (no crop/classes metadata)")
        rank = len(self.session.get_inputs()[0].shape)
        if rank != 4:  # a stacking MLP takes first-level probabilities, not spectrogram tiles
            architecture = metadata.get("architecture", "?")
            raise ConfigError(
                f"{path}: a stacking network ({architecture}, input of rank {rank}) tags "
                "first-level predictions, not audio; export a first-level checkpoint for --onnx"
            )
        self.classes = tuple(json.loads(metadata["classes"]))
        self.architecture = metadata.get("architecture", "?")
        self.device = torch.device("cpu")
        self.tile = int(metadata["crop_size"])
        self.step = int(tile_step or self.tile // 4)
        self.batch_size = batch_size

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        output = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
        return torch.from_numpy(output).float()

    @property
    def embeds(self) -> bool:
        return EMBEDDING_NAME in {output.name for output in self.session.get_outputs()}

    def _forward_with_embedding(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.embeds:
            raise ConfigError(
                f"{self.path}: exported without the embedding output; export the checkpoint "
                "again with export_onnx.py"
            )
        probabilities, embedding = self.session.run(
            [OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: batch.numpy()}
        )
        return torch.from_numpy(probabilities).float(), torch.from_numpy(embedding).float()


class OnnxBlend:
    """tag_audio.py's model source for one exported network: clip = tile mean (as one
    checkpoint with --model)."""

    def __init__(self, path: str | os.PathLike, batch_size: int) -> None:
        self.predictor = OnnxPredictor(path, batch_size)
        self.classes = self.predictor.classes
        self.tile, self.step = self.predictor.tile, self.predictor.step

    @property
    def embeds(self) -> bool:
        return self.predictor.embeds

    def predict(self, spectrograms: Sequence[np.ndarray], embeddings: bool = False) -> list[Tags]:
        if not embeddings:
            return [Tags(t.mean(axis=0), t) for t in self.predictor.predict_tiles(spectrograms)]
        tiles, features = self.predictor.predict_tiles_and_embeddings(spectrograms)
        return [Tags(t.mean(axis=0), t, f.mean(axis=0), f) for t, f in zip(tiles, features)]


def onnx_source(path: str | os.PathLike, batch_size: int):
    blend = OnnxBlend(path, batch_size)
    description = f"ONNX model {path} ({blend.predictor.architecture}, ONNX Runtime)"
    return ModelSource(description, blend.classes, blend)
