#!/usr/bin/env python3
"""Export the official CAM++ checkpoint (3D-Speaker, zh+en common advanced, 192-d) to ONNX.

Two layers:

``build``  (stdlib only; any Python 3.11) creates a throw-away venv, installs the pinned
           build requirements into it (torch CPU, speakerlab without its heavy
           dependencies, onnx, onnxruntime, kaldi-native-fbank, soundfile, numpy) and runs
           this script's ``export`` mode there. torch never enters the runtime environment.

``export`` (needs torch) builds ``speakerlab.models.campplus.DTDNN.CAMPPlus(80, 192)``, loads
           the checkpoint with strict=True, exports it with the TorchScript-based exporter
           (input ``feats`` float32 [N, T, 80], output ``embs`` [N, 192], N and T dynamic,
           opset 17), exports a second time and requires byte-identical files (the project
           records the file's sha256), checks onnxruntime against torch on real fbank
           features of several lengths (max abs diff < 1e-4) and writes the file atomically.

stderr carries progress; on success stdout gets one JSON line (out, sha256, bytes,
max_abs_diff). Exit status is non-zero on any failure, with the reason on the last line
of stderr.

    python -m whispdiar.diarization.export_campplus build \
        --checkpoint campplus_cn_en_common.pt --out campplus_cn_en_common.onnx

Why the TorchScript exporter (``dynamo=False``): it is byte-deterministic (node and
initializer names come from module paths, no doc strings or source paths are embedded,
and with no custom functions torch's C++ serialiser writes the bytes directly), needs no
onnxscript, takes ~5 s instead of ~1 min, and the resulting graph runs as fast in
onnxruntime as the dynamo exporter's. The bytes depend on the torch version, hence the pin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve()
PROJECT = HERE.parent.parent  # the checkout, when run from one (its tests/data has real speech)
EMBEDDING_PY = HERE.parent / "embedding.py"

# Build environment. torch must stay pinned: a bare "torch" pulls GBs of CUDA wheels, and
# the exported bytes (so the sha256 the manifest records) depend on the torch version.
# The others are pinned to the versions this was verified with, for a reproducible build.
TORCH_REQUIREMENT = "torch==2.13.0"
BUILD_REQUIREMENTS = [
    TORCH_REQUIREMENT,
    "numpy==2.4.6",
    "onnx==1.23.2",  # torch.onnx parses its own output with it (and refuses to run without)
    "onnxruntime==1.31.1",
    "kaldi-native-fbank==1.22.5",
    "soundfile==0.14.0",
]
# 3D-Speaker's package: its campplus modules import only torch, but it declares heavy
# dependencies (modelscope, scikit-learn, ...) that the export does not need.
SPEAKERLAB_REQUIREMENT = "speakerlab==0.0.6"

OPSET = 17
INPUT_NAME = "feats"
OUTPUT_NAME = "embs"
FEAT_DIM = 80
EMBEDDING_SIZE = 192
TOLERANCE = 1e-4  # max abs difference onnxruntime vs torch
DUMMY_FRAMES = 200  # trace length; the exported graph does not depend on it (verified)


def log(msg: str) -> None:
    print(f"[export_campplus] {msg}", file=sys.stderr, flush=True)


class ExportError(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- build mode


def _run_logged(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run a command quietly; on failure show the end of its output and raise."""
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        for ln in lines[-25:]:
            print(f"    {ln}", file=sys.stderr)
        last = lines[-1].strip() if lines else "no output"
        raise ExportError(f"{what} failed (exit {proc.returncode}): {last}")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    checkpoint = Path(args.checkpoint).resolve()
    out = Path(args.out).resolve()
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    base_python = args.python or sys.executable
    if args.python is None and sys.version_info[:2] != (3, 11):
        log(f"warning: running on Python {sys.version.split()[0]}; the build is verified on 3.11")

    created = False
    tmp_root: Path | None = None
    if args.venv:
        venv = Path(args.venv).resolve()
        if venv.is_dir() and any(venv.iterdir()) and not _venv_python(venv).exists():
            # It would be deleted afterwards: refuse to adopt a folder that holds something else.
            raise ExportError(f"--venv {venv} exists and is not a venv")
    else:
        tmp_root = Path(tempfile.mkdtemp(prefix="whispdiar-campplus-build-"))
        venv = tmp_root / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    try:
        py = _venv_python(venv)
        if py.exists():
            log(f"reusing build venv {venv}")
        else:
            log(f"creating build venv {venv} (from {base_python})")
            created = True
            _run_logged([base_python, "-m", "venv", str(venv)], env, "venv creation")
        t_venv = time.monotonic()

        pip = [str(py), "-m", "pip", "install", "--no-input", "--quiet", *args.pip_arg]
        log(f"installing {' '.join(BUILD_REQUIREMENTS)}")
        _run_logged([*pip, *BUILD_REQUIREMENTS], env, "pip install of the build requirements")
        log(f"installing {SPEAKERLAB_REQUIREMENT} --no-deps")
        _run_logged([*pip, "--no-deps", SPEAKERLAB_REQUIREMENT], env, "pip install of speakerlab")
        t_pip = time.monotonic()
        log(f"build venv ready: venv {t_venv - t0:.1f} s, installs {t_pip - t_venv:.1f} s")

        cmd = [str(py), str(HERE), "export", "--checkpoint", str(checkpoint), "--out", str(out)]
        for a in args.check_audio:
            cmd += ["--check-audio", a]
        # The child's stdout (the JSON result) passes straight through; its stderr (progress)
        # is echoed line by line, and its last line becomes the reason if it fails.
        last = "no output"
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) as child:
            assert child.stderr is not None
            for line in child.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                if line.strip():
                    last = line.strip().removeprefix("[export_campplus] ").removeprefix("ERROR: ")
        if child.returncode != 0:
            raise ExportError(f"export in the build venv failed (exit {child.returncode}): {last}")
        log(f"build done in {time.monotonic() - t0:.1f} s (export {time.monotonic() - t_pip:.1f} s)")
        return 0
    finally:
        if args.keep:
            log(f"keeping build venv {venv}")
        elif created or tmp_root is not None:
            # Only ever remove what this run created; a venv passed in that already existed stays.
            t = time.monotonic()
            shutil.rmtree(tmp_root if tmp_root is not None else venv, ignore_errors=True)
            log(f"removed build venv in {time.monotonic() - t:.1f} s")


# ---------------------------------------------------------------------------- export mode


def _load_feature_module():  # -> module with fbank(), SAMPLE_RATE
    """The runtime's own feature code, so the check sees exactly what whispdiar computes.

    Loaded by file path: the build venv has no whispdiar installed, and the package's
    __init__ may need runtime-only dependencies. Falls back to an installed package.
    """
    import importlib.util

    if EMBEDDING_PY.is_file():
        spec = importlib.util.spec_from_file_location("whispdiar_embedding", EMBEDDING_PY)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    import whispdiar.diarization.embedding as module  # type: ignore[import-not-found]

    return module


def _check_waves(paths: list[str], sample_rate: int) -> list[tuple[str, object]]:
    """Waveforms for the numerical check: real speech of different lengths if available."""
    import numpy as np
    import soundfile as sf

    files: list[Path] = []
    candidates = [Path(p) for p in paths] or [PROJECT / "tests" / "data", PROJECT.parent / "shared/data/librispeech"]
    for c in candidates:
        if c.is_file():
            files.append(c)
        elif c.is_dir():
            found = sorted(c.glob("ls-*.flac")) or sorted(c.rglob("*.flac"))
            files.extend(found)
        if files and not paths:
            break
    waves: list[tuple[str, object]] = []
    infos = []
    for f in files:
        try:
            info = sf.info(str(f))
        except RuntimeError:
            continue
        if info.samplerate == sample_rate:
            infos.append((info.frames, f))
    infos.sort()
    if not paths and len(infos) > 4:  # shortest, two in between, longest
        n = len(infos)
        infos = [infos[0], infos[n // 3], infos[2 * n // 3], infos[-1]]
    for _, f in infos:
        w, _ = sf.read(str(f), dtype="float32", always_2d=True)
        waves.append((f.name, w[:, 0]))
    if waves:  # a short stretch too, as diarization embeds segments of ~1 s
        name, w = waves[0]
        waves.append((f"{name}[:1.23s]", w[: int(1.23 * sample_rate)]))
    else:
        log("no 16 kHz speech files found for the check; using synthetic signals")
    # Always add a deterministic synthetic signal of an odd length (not a multiple of the
    # model's 100-frame segment pooling), so the check covers partial segments too.
    rng = np.random.default_rng(0)
    t = np.arange(int(3.337 * sample_rate)) / sample_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sample_rate) / k for k in range(1, 12))
    synth = 0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    waves.append(("synthetic-3.337s", synth.astype(np.float32)))
    return waves


def export(args: argparse.Namespace) -> int:
    import torch
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    checkpoint = Path(args.checkpoint).resolve()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"torch {torch.__version__}; loading {checkpoint}")
    model = CAMPPlus(feat_dim=FEAT_DIM, embedding_size=EMBEDDING_SIZE)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    tmps = [out.parent / f".{out.name}.tmp{os.getpid()}-{i}" for i in range(2)]
    try:
        digests = []
        for tmp in tmps:
            t = time.monotonic()
            _export_onnx(model, tmp)
            digests.append(sha256_file(tmp))
            log(f"exported {tmp.name} in {time.monotonic() - t:.1f} s, sha256 {digests[-1]}")
        if digests[0] != digests[1]:
            raise ExportError(f"two exports differ ({digests[0][:12]} vs {digests[1][:12]}): not deterministic")
        tmps[1].unlink()

        max_diff = _check(model, tmps[0], args.check_audio)
        if not max_diff < TOLERANCE:
            raise ExportError(f"onnxruntime differs from torch by {max_diff:.3g} (limit {TOLERANCE:g})")
        os.replace(tmps[0], out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    size = out.stat().st_size
    log(f"wrote {out} ({size} bytes, sha256 {digests[0]}, max abs diff {max_diff:.3g})")
    result = {"out": str(out), "sha256": digests[0], "bytes": size, "max_abs_diff": float(max_diff)}
    result |= {"torch": torch.__version__, "opset": OPSET}
    print(json.dumps(result), flush=True)
    return 0


def _export_onnx(model, path: Path) -> None:
    import warnings

    import torch

    dummy = torch.randn(1, DUMMY_FRAMES, FEAT_DIM, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript-based exporter is deprecated; it is chosen on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N", 1: "T"}, OUTPUT_NAME: {0: "N"}},
        )


def _check(model, onnx_path: Path, audio: list[str]) -> float:
    """Max abs difference between onnxruntime (via the runtime's own code) and torch."""
    import numpy as np
    import onnx
    import torch

    onnx.checker.check_model(str(onnx_path))
    emb = _load_feature_module()
    embedder = emb.SpeakerEmbedder(onnx_path, threads=2, model_id="export-check")  # no registry here
    sess = embedder._session
    for kind, infos in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for i in infos:
            log(f"onnx {kind}: {i.name} {i.type} {i.shape}")
    names = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"unexpected input/output names {names}")

    def torch_embed(feats_batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(feats_batch)
        x = x - x.mean(dim=1, keepdim=True)  # 3D-Speaker's FBank(mean_nor=True), per utterance
        with torch.no_grad():
            return model(x).numpy()

    worst = 0.0
    for name, wave in _check_waves(audio, emb.SAMPLE_RATE):
        feats = emb.fbank(wave)
        ref = torch_embed(feats[None])[0]
        got = embedder.embed_features(feats)
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        log(f"check {name}: {len(wave) / emb.SAMPLE_RATE:.2f} s, T={len(feats)}, max abs diff {diff:.2e}")
    # Batched run (N > 1) of equal-length crops, through embed_batch.
    feats = emb.fbank(wave)
    crops = [feats[i * 50 : i * 50 + 137] for i in range(3)]
    ref = torch_embed(np.stack(crops))
    got = embedder.embed_batch(crops)
    diff = float(np.abs(ref - got).max())
    worst = max(worst, diff)
    log(f"check batch N=3, T=137: max abs diff {diff:.2e}")
    return worst


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True, help="campplus_cn_en_common.pt")
    common.add_argument("--out", required=True, help="ONNX file to write (atomically)")
    common.add_argument(
        "--check-audio",
        action="append",
        default=[],
        metavar="PATH",
        help="16 kHz speech file or folder for the torch/onnxruntime check (repeatable; "
        "default: the project's tests/data LibriSpeech files)",
    )
    sub.add_parser("export", parents=[common], help="export (run inside an environment with torch)")
    b = sub.add_parser("build", parents=[common], help="create a throw-away venv and export there")
    b.add_argument("--venv", help="build venv location (default: a temporary folder)")
    b.add_argument("--keep", action="store_true", help="keep the build venv afterwards")
    b.add_argument("--python", help="interpreter to create the venv with (default: this one)")
    b.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for pip install, e.g. --pip-arg=--index-url=URL for a CPU-only torch index",
    )
    args = parser.parse_args(argv)
    try:
        return build(args) if args.mode == "build" else export(args)
    except ExportError as e:
        log(f"ERROR: {e}")
        return 1
    except Exception as e:  # a torch/onnx failure: full traceback, then a one-line reason last
        traceback.print_exc()
        reason = " ".join(str(e).split())[:300]
        log(f"ERROR: {type(e).__name__}: {reason}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
