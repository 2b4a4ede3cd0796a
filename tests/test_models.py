"""The three CNNs: exact parameter counts (the original's), key layout, output order and paths."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models import MODELS, AuxSkipAttention, RnnAuxSkipAttention, SkipAttention
from src.models.blocks import (
    ConvBlock,
    ConvolutionalBlockAttentionModule,
    SkipBlock,
    SpatialAttention,
    classifier_head,
)

NUM_CLASSES = 80
TINY = {"base_size": 8}
AUX_MODELS = (AuxSkipAttention, RnnAuxSkipAttention)
ALL_MODELS = (SkipAttention, AuxSkipAttention, RnnAuxSkipAttention)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def buffer_elements(module: nn.Module) -> int:
    return sum(b.numel() for b in module.buffers())


def full_size(model_class: type[nn.Module], **kwargs) -> nn.Module:
    # The meta device allocates nothing, so full-size models cost no time to count.
    with torch.device("meta"):
        return model_class(NUM_CLASSES, **kwargs)


def tiny(model_class: type[nn.Module], **kwargs) -> nn.Module:
    return model_class(NUM_CLASSES, **TINY, **kwargs).eval()


# --------------------------------------------------------------------------- counts


def test_used_aux_config_matches_spec_table():
    model = full_size(AuxSkipAttention, dropout=0.4, last_fc=4)
    expected = {
        "conv1": 38_848,
        "skip1": 295_936,
        "aux1": 152_401,
        "conv2": 221_696,
        "skip2": 590_848,
        "aux2": 152_401,
        "conv3": 885_760,
        "skip3": 1_180_672,
        "aux3": 152_401,
        "conv4": 3_540_992,
        "attention": 524_386,
        "attention.ca": 524_288,
        "attention.sa": 98,
        "merge": 9_438_208,
        "fc": 152_401,
    }
    counts = {name: trainable(model.get_submodule(name)) for name in expected}
    assert counts == expected
    assert trainable(model) == 17_326_950
    assert buffer_elements(model) == 10_000


@pytest.mark.parametrize(
    ("model_class", "kwargs", "expected"),
    [
        (AuxSkipAttention, {}, 17_022_310),
        (RnnAuxSkipAttention, {"dropout": 0.4, "last_fc": 4}, 22_054_246),
        (RnnAuxSkipAttention, {}, 21_749_606),
        (SkipAttention, {"dropout": 0.2}, 16_793_587),
        (SkipAttention, {"dropout": 0.2, "kernel_size": 3}, 16_793_507),
    ],
)
def test_parameter_counts(model_class, kwargs, expected):
    assert trainable(full_size(model_class, **kwargs)) == expected


def test_rnn_part_and_skip_attention_buffers():
    rnn = full_size(RnnAuxSkipAttention, dropout=0.4, last_fc=4)
    assert trainable(rnn.lstm) == 4_727_296
    assert buffer_elements(full_size(SkipAttention)) == 8_205


def test_models_registry():
    expected = {
        "AuxSkipAttention": AuxSkipAttention,
        "RnnAuxSkipAttention": RnnAuxSkipAttention,
        "SkipAttention": SkipAttention,
    }
    assert expected == MODELS


# --------------------------------------------------------------------------- state dict


def _bn_keys(prefix: str) -> set[str]:
    names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return {f"{prefix}.{name}" for name in names}


def _head_keys(prefix: str) -> set[str]:
    return {
        f"{prefix}.1.weight",
        f"{prefix}.1.bias",
        f"{prefix}.2.weight",
        *_bn_keys(f"{prefix}.3"),
        f"{prefix}.5.weight",
        f"{prefix}.5.bias",
    }


def expected_keys(model_class: type[nn.Module]) -> set[str]:
    """The original's state-dict layout, written out independently of the code."""
    keys: set[str] = set()
    for block in range(1, 5):
        for layer in (1, 2):
            keys.add(f"conv{block}.conv{layer}.0.weight")
            keys |= _bn_keys(f"conv{block}.conv{layer}.1")
    for skip in ("skip1", "skip2", "skip3", "merge"):
        keys.add(f"{skip}.conv.weight")
        keys |= _bn_keys(f"{skip}.bn")
    keys |= {"attention.ca.fc1.weight", "attention.ca.fc2.weight", "attention.sa.conv1.weight"}
    keys |= _head_keys("fc")
    if model_class in AUX_MODELS:
        for aux in (1, 2, 3):
            keys |= _head_keys(f"aux{aux}.fc")
    if model_class is RnnAuxSkipAttention:
        for direction in ("", "_reverse"):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                keys.add(f"lstm.rnn.{name}_l0{direction}")
        keys |= {"lstm.embedding.weight", "lstm.embedding.bias"}
    return keys


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_state_dict_keys_follow_original_layout(model_class):
    assert set(tiny(model_class).state_dict()) == expected_keys(model_class)


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_state_dict_round_trip_strict(model_class):
    source = tiny(model_class)
    # Non-default BN statistics, so that the round trip has something to carry.
    source.train()
    with torch.no_grad():
        source(torch.randn(4, 3, 128, 64))
    source.eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)

    torch.manual_seed(1)
    restored = tiny(model_class)
    restored.load_state_dict(torch.load(buffer, weights_only=True), strict=True)

    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        expected, actual = source(x), restored(x)
    for e, a in zip(_as_tuple(expected), _as_tuple(actual), strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


# --------------------------------------------------------------------------- forward


def _as_tuple(output) -> tuple[torch.Tensor, ...]:
    return output if isinstance(output, tuple) else (output,)


@pytest.mark.parametrize("model_class", ALL_MODELS)
@pytest.mark.parametrize("width", [64, 256])
def test_output_shapes(model_class, width):
    with torch.no_grad():
        outputs = _as_tuple(tiny(model_class)(torch.randn(2, 3, 128, width)))
    expected_count = 4 if model_class in AUX_MODELS else 1
    assert len(outputs) == expected_count
    assert all(o.shape == (2, NUM_CLASSES) for o in outputs)


def _capture_outputs(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda _module, args, output, name=name: captured.update(
                {name: output, f"{name}.input": args[0]}
            )
        )
    return captured


def test_skip_attention_concatenates_conv4_then_skips_and_pools_the_merge():
    model = tiny(SkipAttention)
    captured = _capture_outputs(model, ["conv4", "skip1", "skip2", "skip3", "attention", "merge"])
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 128, 64))
        concat = captured["attention.input"]
        expected_concat = torch.cat(
            [captured[name] for name in ("conv4", "skip1", "skip2", "skip3")], dim=1
        )
        expected_logits = model.fc(captured["merge"].mean(dim=(2, 3)))
    assert concat.shape == (2, 4 * 64, 8, 4)
    torch.testing.assert_close(concat, expected_concat, rtol=0, atol=0)
    torch.testing.assert_close(logits, expected_logits)


@pytest.mark.parametrize("model_class", AUX_MODELS)
def test_aux_outputs_are_main_then_deepest_to_shallowest(model_class):
    model = tiny(model_class)
    captured = _capture_outputs(model, ["skip1", "skip2", "skip3"])
    with torch.no_grad():
        main, aux3, aux2, aux1 = model(torch.randn(2, 3, 128, 64))
        for name, output in (("3", aux3), ("2", aux2), ("1", aux1)):
            head = model.get_submodule(f"aux{name}").fc
            expected = head(captured[f"skip{name}"].mean(dim=(2, 3)))
            torch.testing.assert_close(output, expected)
    assert not torch.allclose(main, aux3)


def test_rnn_main_output_is_bilstm_over_time_of_frequency_mean():
    model = tiny(RnnAuxSkipAttention)
    captured = _capture_outputs(model, ["merge"])
    with torch.no_grad():
        main = model(torch.randn(2, 3, 128, 256))[0]
        merged = captured["merge"]  # (B, C, F=8, T=16)
        assert merged.shape == (2, 64, 8, 16)
        sequence = merged.mean(dim=2).permute(2, 0, 1)  # sequence-first, as the original
        lstm = nn.LSTM(64, 64, bidirectional=True)
        lstm.load_state_dict(model.lstm.rnn.state_dict())
        recurrent, _ = lstm(sequence)  # (T, B, 128)
        embedded = F.linear(recurrent, model.lstm.embedding.weight, model.lstm.embedding.bias)
        expected = model.fc(embedded.mean(dim=0))
    torch.testing.assert_close(main, expected)


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_training_step_reaches_every_parameter(model_class):
    model = model_class(NUM_CLASSES, **TINY).train()
    outputs = _as_tuple(model(torch.randn(2, 3, 128, 64)))
    sum(o.sum() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_channels_last_gives_the_same_outputs(model_class):
    model = tiny(model_class)
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        expected = _as_tuple(model(x))
        model = model.to(memory_format=torch.channels_last)
        assert model.conv1.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
        actual = _as_tuple(model(x.contiguous(memory_format=torch.channels_last)))
    for e, a in zip(expected, actual, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- blocks


def test_conv_block_initialisation():
    block = ConvBlock(64, 128)
    convs = [block.conv1[0], block.conv2[0]]
    for conv, fan_in in zip(convs, (64 * 9, 128 * 9), strict=True):
        weight = conv.weight.detach()
        # 73,728 and 147,456 samples: the std estimate is within ~0.3 % of the truth.
        assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
        assert abs(weight.mean().item()) < 0.05 * math.sqrt(2 / fan_in)
        assert conv.bias is None
    for bn in (block.conv1[1], block.conv2[1]):
        assert torch.equal(bn.weight, torch.ones(128))
        assert torch.equal(bn.bias, torch.zeros(128))


def test_conv_block_halves_height_and_width():
    block = ConvBlock(3, 4).eval()
    x = torch.randn(1, 3, 16, 12)
    with torch.no_grad():
        expected = F.avg_pool2d(block.conv2(block.conv1(x)), 2)
        assert torch.equal(block(x), expected)
    assert expected.shape == (1, 4, 8, 6)


def test_skip_block_pools_then_conv_bn_relu():
    block = SkipBlock(4, 6, scale_factor=4).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        x = torch.randn(2, 4, 16, 8)
        expected = F.relu(block.bn(block.conv(F.avg_pool2d(x, 4))))
        actual = block(x)
    assert actual.shape == (2, 6, 4, 2)
    torch.testing.assert_close(actual, expected)


def test_cbam_matches_manual_formula():
    cbam = ConvolutionalBlockAttentionModule(32, ratio=4, kernel_size=7)
    x = torch.randn(2, 32, 6, 10)
    fc1, fc2 = cbam.ca.fc1.weight[:, :, 0, 0], cbam.ca.fc2.weight[:, :, 0, 0]  # (8, 32), (32, 8)
    with torch.no_grad():
        avg, peak = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
        channel_gate = torch.sigmoid(fc2 @ F.relu(fc1 @ avg.T) + fc2 @ F.relu(fc1 @ peak.T)).T
        gated = x * channel_gate[:, :, None, None]
        maps = torch.stack([gated.mean(dim=1), gated.amax(dim=1)], dim=1)
        spatial_gate = torch.sigmoid(F.conv2d(maps, cbam.sa.conv1.weight, padding=3))
        expected = gated * spatial_gate
        torch.testing.assert_close(cbam(x), expected)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_spatial_attention_keeps_size(kernel_size):
    attention = SpatialAttention(kernel_size)
    assert attention(torch.randn(1, 5, 9, 4)).shape == (1, 1, 9, 4)


@pytest.mark.parametrize("kernel_size", [1, 5, 9])
def test_spatial_attention_rejects_other_kernel_sizes(kernel_size):
    with pytest.raises(ValueError, match="kernel_size"):
        SpatialAttention(kernel_size)


def test_classifier_head_layout():
    head = classifier_head(32, 16, 5, dropout=0.4)
    assert [type(layer) for layer in head] == [
        nn.Dropout,
        nn.Linear,
        nn.PReLU,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
    ]
    assert head[0].p == 0.4 and head[4].p == 0.2
    assert head[2].weight.shape == (1,) and head[2].weight.item() == 0.25
    assert (head[1].in_features, head[1].out_features) == (32, 16)
    assert (head[5].in_features, head[5].out_features) == (16, 5)


def test_models_scale_with_base_size():
    model = AuxSkipAttention(NUM_CLASSES, base_size=8, last_filters=4, last_fc=3)
    assert model.conv4.conv2[0].out_channels == 64
    assert model.attention.ca.fc1.in_channels == 256
    assert model.merge.conv.out_channels == 32
    assert (model.fc[1].in_features, model.fc[1].out_features) == (32, 24)
    assert (model.aux1.fc[1].in_features, model.aux1.fc[1].out_features) == (64, 24)


@pytest.mark.parametrize("name", ["SkipAttention", "AuxSkipAttention", "RnnAuxSkipAttention"])
def test_embed_is_what_the_main_head_sees(name):
    """A clip's embedding is the pooled features the main classifier head is applied to."""
    torch.manual_seed(0)
    network = MODELS[name](num_classes=5, base_size=4).eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        embedding = network.embed(x)
        main = network(x)
        main = main if isinstance(main, torch.Tensor) else main[0]
        assert embedding.shape == (2, 4 * 8)
        torch.testing.assert_close(network.fc(embedding), main)


@pytest.mark.parametrize("name", ["SkipAttention", "AuxSkipAttention", "RnnAuxSkipAttention"])
def test_a_linear_head_is_one_layer_on_the_embedding(name):
    """head="linear" (a linear probe's network): the main output is one Linear layer applied to
    the embedding; the trunk's keys are the two-layer head's network's."""
    torch.manual_seed(0)
    network = MODELS[name](num_classes=5, base_size=4, head="linear").eval()
    assert isinstance(network.fc, torch.nn.Linear)
    assert (network.fc.in_features, network.fc.out_features) == (32, 5)
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        main = network(x)
        main = main if isinstance(main, torch.Tensor) else main[0]
        expected = network.embed(x) @ network.fc.weight.T + network.fc.bias
        torch.testing.assert_close(main, expected)
    mlp = MODELS[name](num_classes=5, base_size=4)
    trunk = {k for k in mlp.state_dict() if not k.startswith("fc.")}
    assert trunk == {k for k in network.state_dict() if not k.startswith("fc.")}
    with pytest.raises(ValueError, match="head must be"):
        MODELS[name](num_classes=5, base_size=4, head="deep")
