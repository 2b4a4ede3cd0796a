"""Training throughput of the full-size AuxSkipAttention (input 3x128x256) and of the data path.

    python bench/train_step.py [--device cuda] [--batch 128] [--steps 20] [--channels-last]

Prints, as ratios against the faithful baseline measured in the same run (fp32, CPU
augmentation):
  * step only: training samples per second for fp32 and each AMP mode (fp16 with GradScaler,
    bf16), achieved TFLOP/s (49 GFLOP per sample) and the share of the card's bf16 peak;
  * data only: samples per second per loader worker of the CPU augmentation path (train
    transforms + mixers, as the original) and of the GPU path's workers (raw windows), and the
    batched device augmentation (samples per second);
  * end to end: the real DataLoader (probability sampler, loader workers) + step, for the
    faithful baseline (fp32, CPU augmentation) and for bf16 + GPU augmentation; the data path
    is the bottleneck when the end-to-end rate falls well below the step-only rate.
On a CPU the step figures use a small batch (the full model costs ~49 GFLOP per sample) and
the loader workers share the cores with the step, so only the GPU figures tell end to end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import best_time, bf16_peak, describe_hardware, table

from src.augment.gpu import augment_batch
from src.augment.mixers import get_mixer
from src.augment.transforms import get_transforms
from src.experiments import resolve
from src.models.argus_models import FreesoundModel
from src.training.datasets import ClipDataset, RawWindowClips

GFLOP_PER_SAMPLE = 49.0  # forward + backward, input 3x128x256


def make_model(
    device: str,
    amp: str,
    channels_last: bool,
    compile: bool,
    classes: int = 80,
    smoke: bool = False,
) -> FreesoundModel:
    """corr_noisy_007's network at full size (or at smoke size: width 8, 64-frame crops)."""
    config = resolve("corr_noisy_007", "smoke" if smoke else "full")
    model = FreesoundModel(
        {
            "nn_module": (
                config["model"]["name"],
                {**config["model"]["params"], "num_classes": classes},
            ),
            "loss": (config["loss"]["name"], config["loss"]["params"]),
            "optimizer": ("Adam", {"lr": 0.0009}),
            "device": device,
            "aux_weights": config["aux_weights"],
            "amp": amp,
            "channels_last": channels_last,
            "crop_size": config["crop_size"],
        }
    )
    if compile:
        model.nn_module = torch.compile(model.nn_module)
    return model


def step_rate(
    device: str,
    amp: str,
    batch: int,
    steps: int,
    channels_last: bool,
    compile: bool,
    smoke: bool = False,
) -> float:
    model = make_model(device, amp, channels_last, compile, smoke=smoke)
    crop = resolve("corr_noisy_007", "smoke" if smoke else "full")["crop_size"]
    inputs = torch.randn(batch, 3, 128, crop, device=device)
    target = (torch.rand(batch, 80, device=device) < 0.02).float()
    noisy = (torch.rand(batch, device=device) < 0.3).to(torch.uint8)

    def run():
        for _ in range(steps):
            model.train_step((inputs, target, noisy), None)

    seconds = best_time(run, device, repeat=2, warmup=1)
    return batch * steps / seconds


class FakeStore:
    """Random spectrograms with the FAT2019 length spread (0.5 s to 30 s, mostly short)."""

    def __init__(self, count: int = 256, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        lengths = np.exp(rng.uniform(np.log(32), np.log(1900), size=count)).astype(int)
        self.fnames = [f"{i}.wav" for i in range(count)]
        self.specs = {
            f: rng.normal(-40, 15, size=(128, n)).astype(np.float32)
            for f, n in zip(self.fnames, lengths)
        }

    def __contains__(self, fname):
        return fname in self.specs

    def __getitem__(self, fname):
        return self.specs[fname]


def faithful_clips(smoke: bool = False) -> ClipDataset:
    """Fake clips with `corr_noisy_007`'s train transforms and mixer (the CPU path)."""
    config = resolve("corr_noisy_007", "smoke" if smoke else "full")
    store = FakeStore()
    targets = np.eye(80, dtype=np.float32)[np.arange(len(store.fnames)) % 80]
    return ClipDataset(
        store,
        store.fnames,
        targets,
        0,
        get_transforms(True, config["crop_size"], **config["transforms"]),
        get_mixer(config["mixer"]["prob"]),
    )


def data_rates(samples: int, device: str, batch: int, smoke: bool = False) -> dict[str, float]:
    clips = faithful_clips(smoke)
    store = clips.store
    raw = RawWindowClips(clips)
    torch.set_num_threads(1)  # one loader worker = one core
    rates = {}
    for name, dataset in (
        ("CPU augmentation (per worker)", clips),
        ("GPU path raw windows (per worker)", raw),
    ):
        started = time.perf_counter()
        for key in range(samples):
            dataset.sample(key % len(store.fnames), np.random.default_rng([0, key]))
        rates[name] = samples / (time.perf_counter() - started)
    items = [raw.sample(k % len(store.fnames), np.random.default_rng([1, k])) for k in range(batch)]
    collated = torch.utils.data.default_collate(items)
    on_device = torch.utils._pytree.tree_map(
        lambda t: t.to(device) if torch.is_tensor(t) else t, collated
    )
    torch.set_num_threads(torch.get_num_threads() if device != "cpu" else 2)
    seconds = best_time(lambda: augment_batch(*on_device), device, repeat=3)
    rates[f"device augmentation on {device} (batch {batch})"] = batch / seconds
    return rates


def end_to_end_rate(
    device: str,
    amp: str,
    augment_on: str,
    batch: int,
    steps: int,
    workers: int,
    channels_last: bool,
    smoke: bool = False,
) -> float:
    """Samples per second of `steps` training steps fed by a real DataLoader, as
    `first_level.build_fold` builds it (after one warm-up pass that starts the workers)."""
    from torch.utils.data import DataLoader

    from src.training.datasets import EpochSampler, ProbabilityMix

    clips = faithful_clips(smoke)
    size = batch * steps
    train_set = ProbabilityMix(
        [RawWindowClips(clips) if augment_on == "gpu" else clips], [1.0], size, seed=0
    )
    loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=EpochSampler(size),
        drop_last=True,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
    )
    model = make_model(device, amp, channels_last, False, smoke=smoke)
    if augment_on == "gpu":
        model.batch_transform = augment_batch

    def epoch():
        for batch_data in loader:
            model.train_step(batch_data, None)

    return size / best_time(epoch, device, repeat=2, warmup=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--batch", type=int, default=128 if cuda else 4)
    parser.add_argument("--steps", type=int, default=20 if cuda else 2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the step")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--data-samples", type=int, default=300)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smoke-size network and crops (width 8, 64 frames): a quick check of the "
        "script, no FLOP figures",
    )
    parser.add_argument(
        "--workers", type=int, default=16 if cuda else 1, help="loader workers, end to end"
    )
    args = parser.parse_args(argv)
    on_gpu = torch.device(args.device).type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    hardware = describe_hardware(args.device)
    crop = resolve("corr_noisy_007", "smoke" if args.smoke else "full")["crop_size"]
    gflop = None if args.smoke else GFLOP_PER_SAMPLE
    print(f"{hardware}; batch {args.batch}, input 3x128x{crop}, {gflop or 'n/a'} GFLOP/sample")

    modes = ["off", "bf16"] + (["fp16"] if on_gpu else [])
    rows, baseline = [], None
    peak = bf16_peak(args.device)
    for amp in modes:
        rate = step_rate(
            args.device, amp, args.batch, args.steps, args.channels_last, args.compile, args.smoke
        )
        baseline = baseline or rate
        tflops = rate * gflop / 1000 if gflop else None
        rows.append(
            {
                "step": " ".join(
                    ["fp32" if amp == "off" else amp]
                    + (["channels-last"] if args.channels_last else [])
                    + (["compiled"] if args.compile else [])
                ),
                "samples/s": f"{rate:.1f}",
                "vs fp32": f"{rate / baseline:.2f}x",
                "TFLOP/s": f"{tflops:.2f}" if tflops else "n/a",
                "share of bf16 peak": f"{100 * tflops / peak:.1f}%" if peak and tflops else "n/a",
            }
        )
    print(table(rows, ["step", "samples/s", "vs fp32", "TFLOP/s", "share of bf16 peak"]))

    rates = data_rates(args.data_samples, args.device, 128, args.smoke)
    base = next(iter(rates.values()))
    data_rows = [
        {"data path": k, "samples/s": f"{v:.0f}", "vs CPU path": f"{v / base:.2f}x"}
        for k, v in rates.items()
    ]
    print(table(data_rows, ["data path", "samples/s", "vs CPU path"]))

    e2e_rows, e2e_base = [], None
    for amp, augment_on in (("off", "cpu"), ("bf16", "cpu"), ("bf16", "gpu")):
        rate = end_to_end_rate(
            args.device,
            amp,
            augment_on,
            args.batch,
            args.steps,
            args.workers,
            args.channels_last,
            args.smoke,
        )
        e2e_base = e2e_base or rate
        tflops = rate * gflop / 1000 if gflop else None
        e2e_rows.append(
            {
                "end to end": f"{'fp32' if amp == 'off' else amp}, {augment_on} augmentation",
                "samples/s": f"{rate:.1f}",
                "vs faithful": f"{rate / e2e_base:.2f}x",
                "TFLOP/s": f"{tflops:.2f}" if tflops else "n/a",
                "share of bf16 peak": f"{100 * tflops / peak:.1f}%" if peak and tflops else "n/a",
            }
        )
    print(f"end to end: {args.workers} loader worker(s), {args.steps} steps of {args.batch}")
    print(
        table(e2e_rows, ["end to end", "samples/s", "vs faithful", "TFLOP/s", "share of bf16 peak"])
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
