"""``transcribe --ray`` on a real local Ray cluster (issue 19): the same bytes as a local
batch, a worker killed mid-batch, a corrupt input failing alone.

The test starts Ray (2 CPUs, no dashboard) and the CLI connects to it with
``--ray-address``, so the test can find the CLI's named actors and kill one. Both runs use
``--threads 1``; JSON's "timings" (measured run times, different in any two runs) are
left out of the comparison, everything else must be byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import models_installed

from whispdiar import errors
from whispdiar.batch.manifest import MANIFEST_NAME, Manifest

ray = pytest.importorskip("ray")

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "whispdiar"]
CLIPS = ["ls-1688-142285-0006.flac", "ls-1998-15444-0001.flac", "ls-2033-164914-0003.flac",
         "ls-1998-15444-0004.flac", "jfk.wav"]
FORMATS = ["txt", "json", "srt", "rttm"]
ARGS = ["transcribe", "-m", "tiny.en", "--threads", "1"] + [a for f in FORMATS for a in ("-f", f)]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not models_installed("tiny.en", "segmentation-3.0", "campplus", "silero-vad"), reason="models not installed")]


@pytest.fixture(scope="module")
def cluster() -> str:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, bytes]]:
    """The inputs (the clips and a float WAV with a NaN, which fails on the worker) and the
    outputs of the local batch."""
    d = tmp_path_factory.mktemp("ray-in")
    files = [Path(shutil.copy(DATA / c, d / c)) for c in CLIPS]
    x = np.zeros(16000 * 3, np.float32)
    x[20000] = np.nan
    sf.write(d / "nan.wav", x, 16000, subtype="FLOAT")
    files.insert(2, d / "nan.wav")
    out = d / "local"
    proc = subprocess.run(CLI + ARGS + ["-q", "-d", str(out)] + [str(f) for f in files], capture_output=True,
                          timeout=600)
    assert proc.returncode == errors.EXIT_PARTIAL, proc.stderr.decode()
    return files, _outputs(out)


def _outputs(out: Path) -> dict[str, bytes]:
    res = {}
    for p in sorted(out.iterdir()):
        if p.name == MANIFEST_NAME:
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            doc = json.loads(data)
            doc.pop("timings", None)
            data = json.dumps(doc, sort_keys=True).encode()
        res[p.name] = data
    return res


def _check_run(proc: subprocess.CompletedProcess | subprocess.Popen, stderr: str, out: Path,
               local: dict[str, bytes]) -> None:
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == errors.EXIT_PARTIAL, stderr  # nan.wav failed, the rest done
    assert _outputs(out) == local
    lines = [ln for ln in stderr.splitlines() if ln.startswith("whispdiar:")]
    assert lines[-1].startswith(f"whispdiar: {len(CLIPS)} of {len(CLIPS) + 1} inputs done, 1 failed: ")
    assert lines[-1].endswith("nan.wav")
    assert any("nan.wav: contains NaN or infinite samples" in ln for ln in lines)
    recs = {Path(k).name: r for k, r in Manifest(out).latest().items()}
    assert recs["nan.wav"].status == "failed" and recs["nan.wav"].attempts == 1  # not retried
    assert all(r.status == "done" and r.engine == "ray" for n, r in recs.items() if n != "nan.wav")


def test_ray_batch_same_bytes_as_local(cluster: str, batch: tuple[list[Path], dict[str, bytes]],
                                       tmp_path: Path) -> None:
    files, local = batch
    out = tmp_path / "ray"
    t0 = time.monotonic()
    proc = subprocess.run(CLI + ARGS + ["--ray", "--ray-address", cluster, "-d", str(out)] + [str(f) for f in files],
                          capture_output=True, timeout=600)
    stderr = proc.stderr.decode()
    _check_run(proc, stderr, out, local)
    assert "ray: 2 workers" in stderr
    print(f"ray batch: {time.monotonic() - t0:.1f} s")


def test_worker_killed_mid_batch_file_completes_elsewhere(cluster: str, batch: tuple[list[Path], dict[str, bytes]],
                                                          tmp_path: Path) -> None:
    files, local = batch
    out = tmp_path / "ray"
    proc = subprocess.Popen(CLI + ARGS + ["--ray", "--ray-address", cluster, "-d", str(out)]
                            + [str(f) for f in files], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until a first file is done
        if out.is_dir() and any(r.status == "done" for r in Manifest(out).latest().values()):
            break
        time.sleep(0.05)
    assert proc.poll() is None
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == "whispdiar")
    assert len(names) == 2
    victim = ray.get_actor(names[0], namespace="whispdiar")
    os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)  # the process dies under its file
    _, err = proc.communicate(timeout=300)
    stderr = err.decode()
    _check_run(proc, stderr, out, local)
    assert "died under" in stderr and "trying it again" in stderr
    recs = Manifest(out).latest().values()
    assert any(r.attempts == 2 for r in recs), [(r.display, r.attempts) for r in recs]


def test_sigint_stops_a_ray_batch_and_its_actors(cluster: str, batch: tuple[list[Path], dict[str, bytes]],
                                                 tmp_path: Path) -> None:
    files, _ = batch
    out = tmp_path / "ray"
    proc = subprocess.Popen(CLI + ARGS + ["-q", "--ray", "--ray-address", cluster, "-d", str(out)]
                            + [str(f) for f in files], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(r.status == "done" for r in Manifest(out).latest().values()):
            break
        time.sleep(0.05)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == errors.EXIT_SIGINT
    assert err.decode().strip().splitlines()[-1] == "whispdiar: interrupted"
    time.sleep(1)
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "whispdiar"]
    states = {r.status for r in Manifest(out).latest().values()}
    assert "done" in states and "started" in states  # batch-status: done and unfinished
