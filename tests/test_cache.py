import logging
import os

import numpy as np
import pytest

import src.data.store as cache
from src.data.audio import read_as_melspectrogram
from src.data.store import Extraction, SpectrogramStore, StoreError, get_store, store_key
from tests.helpers import tone, write_wav


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "audio"
    files = [
        write_wav(folder / f"clip{i}.wav", tone(0.3 + 0.4 * i, 200 * (i + 1))) for i in range(4)
    ]
    return files


def test_store_holds_the_reference_spectrograms_memory_mapped(tmp_path, clips):
    store = get_store("curated", clips, tmp_path / "cache", progress=False)
    assert store.fnames == [f.name for f in clips] and len(store) == 4
    for path in clips:
        spec = store[path.name]
        assert spec.shape == (128, store.frames(path.name))
        assert isinstance(spec.base, np.memmap) or isinstance(spec.base.base, np.memmap)
        np.testing.assert_allclose(spec, read_as_melspectrogram(path), atol=1e-3)
    assert store.manifest["audio_hash"] == "6413967" and store.manifest["failed"] == 0
    with pytest.raises(StoreError, match="no spectrogram for 'missing.wav'"):
        store["missing.wav"]


def test_store_is_reused_and_rekeyed_when_files_change(tmp_path, clips, monkeypatch):
    first = get_store("curated", clips, tmp_path / "cache", progress=False)
    monkeypatch.setattr(cache, "_write_store", lambda *a, **k: pytest.fail("re-extracted"))
    assert get_store("curated", clips, tmp_path / "cache", progress=False).path == first.path
    assert store_key(clips[:3]) != store_key(clips)
    write_wav(clips[0], tone(1.5))  # same name, new content size
    assert store_key(clips) != first.path.name.split("-")[-1]


def test_workers_give_identical_stores(tmp_path, clips):
    one = get_store("a", clips, tmp_path / "c1", Extraction(workers=1), progress=False)
    two = get_store("a", clips, tmp_path / "c2", Extraction(workers=2), progress=False)
    assert (one.path / "spectrograms.f32").read_bytes() == (
        two.path / "spectrograms.f32"
    ).read_bytes()


def test_librosa_backend_agrees_with_torch_backend(tmp_path, clips):
    torch_store = get_store(
        "a", clips, tmp_path / "c1", Extraction(backend="torch"), progress=False
    )
    librosa_store = get_store(
        "a", clips, tmp_path / "c2", Extraction(backend="librosa"), progress=False
    )
    for name in torch_store.fnames:
        np.testing.assert_allclose(torch_store[name], librosa_store[name], atol=1e-3)


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path, clips):
    (clips[0].parent / "empty.wav").write_bytes(b"")
    (clips[0].parent / "junk.wav").write_bytes(b"junk" * 100)
    files = [*clips, clips[0].parent / "empty.wav", clips[0].parent / "junk.wav"]
    store = get_store("noisy", files, tmp_path / "cache", progress=False)
    assert len(store) == 4 and "empty.wav" not in store
    failures = store.failures
    assert failures["fname"].tolist() == ["empty.wav", "junk.wav"]
    assert "empty file" in failures["reason"][0] and store.manifest["failed"] == 2


def test_interrupted_extraction_leaves_no_finished_store(tmp_path, clips, monkeypatch):
    calls = []
    real = cache._process

    def interrupted(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(cache, "_process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_store("curated", clips, tmp_path / "cache", Extraction(workers=1), progress=False)
    # Neither the store, nor its temporary, nor the cache folder made for them.
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(cache, "_process", real)
    assert len(get_store("curated", clips, tmp_path / "cache", progress=False)) == 4


def test_duplicate_names_and_unfinished_folders_are_refused(tmp_path, clips):
    with pytest.raises(StoreError, match="unique"):
        get_store("a", [clips[0], clips[0]], tmp_path / "cache", progress=False)
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match="not a finished spectrogram store"):
        SpectrogramStore(tmp_path / "half")


ONE = Extraction(workers=1)  # four short clips: no pool of processes


def test_a_clip_reencoded_to_the_same_size_gets_a_new_store(tmp_path, clips, caplog):
    first = get_store("curated", clips, tmp_path / "cache", ONE, progress=False)
    clip = clips[1]
    before, stat = first[clip.name].copy(), clip.stat()
    write_wav(clip, tone(0.7, 1000))  # new content, same length: the same byte size
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # whatever the clock
    assert clip.stat().st_size == stat.st_size
    with caplog.at_level(logging.INFO, logger="src.data.store"):
        second = get_store("curated", clips, tmp_path / "cache", ONE, progress=False)
    assert second.path != first.path
    assert np.abs(second[clip.name] - before).max() > 1
    assert f"differ from those of ['{first.path.name}']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="src.data.store"):
        again = get_store("curated", clips, tmp_path / "cache", ONE, progress=False)
    assert again.path == second.path
    assert "reusing the curated store" in caplog.text
