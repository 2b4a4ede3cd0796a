# GPU image for training and prediction: CUDA 12 runtime with cuDNN, Python 3.11, the CUDA build
# of the pinned torch, and the system libraries for audio I/O (libsndfile) and the microphone
# demo (PortAudio). No apex: mixed precision is torch.amp.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10); ffmpeg lets librosa decode
# formats libsndfile cannot; python3.11-tk gives matplotlib a window for the live demo.
# DL3008 (apt versions unpinned) does not apply: the PPA and Ubuntu's security updates replace
# their packages, and a pinned version that leaves the archive breaks every later build; the
# base image is pinned, and the Python packages are pinned in requirements.txt.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev python3.11-tk \
        libsndfile1 libportaudio2 libasound2 ffmpeg git make \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The CUDA build of the same torch as requirements.txt; pip then finds the pin satisfied.
ARG TORCH_CUDA=cu128
RUN pip install pip==26.3 \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_CUDA}

COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

ENV PYTHONPATH=/workdir \
    FREESOUND_DATA_DIR=/workdir/data \
    TORCH_HOME=/workdir/data/.torch
WORKDIR /workdir
COPY . /workdir
