"""Fuzz the audio loader for a bounded time (`make fuzz` runs it for 120 s; not part of CI).

Hypothesis generates inputs: valid WAV/FLAC/OGG/Opus/MP3 files (various widths, rates,
channel counts) put through random mutations (bit flips, overwritten header fields,
truncation, spliced or duplicated ranges) plus plain random bytes. Each input is written
to a file and given to ``audio.check``, ``audio.info``, ``audio.stream`` and
``audio.load``. The contract: they return 16 kHz mono finite float32, or raise a
``WhispdiarError`` subclass with a one-line message, and print nothing on stderr
themselves. Anything else is a bug:

  bug-*      a Python exception of another type (saved with its traceback; Hypothesis
             shrinks it to a small reproducer first)
  crash-*    the worker process died (segfault/abort in a C library) on this input
  hang-*     no progress for --hang seconds on this input

Fuzzing runs in a worker process that the supervisor restarts after a crash or hang, so
one native crash does not end the run. Findings go to --out (default bench-out/fuzz/).
Exit status: 0 when nothing was found, 1 otherwise.

  python scripts/fuzz_audio.py --seconds 120
  python scripts/fuzz_audio.py --replay bench-out/fuzz/bug-1a2b3c.wav
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (extension, soundfile format, subtype, rate, channels)
SEEDS = [
    ("wav", "WAV", "PCM_16", 16000, 1),
    ("wav", "WAV", "PCM_24", 44100, 2),
    ("wav", "WAV", "PCM_32", 8000, 1),
    ("wav", "WAV", "FLOAT", 48000, 1),
    ("wav", "WAV", "PCM_U8", 11025, 1),
    ("wav", "WAVEX", "PCM_16", 96000, 6),
    ("flac", "FLAC", "PCM_16", 16000, 1),
    ("flac", "FLAC", "PCM_24", 48000, 2),
    ("ogg", "OGG", "VORBIS", 22050, 1),
    ("opus", "OGG", "OPUS", 48000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 1),
    ("aiff", "AIFF", "PCM_16", 16000, 1),
]


def make_seed(fmt: tuple[str, str, str, int, int], seconds: float = 0.6) -> bytes:
    ext, container, subtype, rate, ch = fmt
    rng = np.random.default_rng(len(ext) + rate + ch)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] + 0.05 * rng.standard_normal((len(t), ch))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format=container, subtype=subtype)
    return buf.getvalue()


# --------------------------------------------------------------------------- target
def check_one(data: bytes, ext: str, workdir: Path) -> None:
    """Run the loader on one input; raise AssertionError or a stray exception on a contract breach."""
    p = workdir / f"case.{ext}"
    p.write_bytes(data)
    # The loader must not print: C libraries writing to fd 2 would break one-line errors.
    captured = workdir / "stderr.txt"
    saved = os.dup(2)
    with open(captured, "wb") as cap:
        os.dup2(cap.fileno(), 2)
        try:
            _exercise(p)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    noise = captured.read_bytes()
    assert not noise, f"loader wrote to stderr: {noise[:200]!r}"


def _exercise(p: Path) -> None:
    from whispdiar.audio import read as audio
    from whispdiar.errors import WhispdiarError

    try:
        audio.check(p)
        inf = audio.info(p)
        assert inf.duration > 0 and inf.channels >= 1, inf
        total = 0
        for block in audio.stream(p, block_seconds=0.25):
            assert block.dtype == np.float32 and block.ndim == 1, (block.dtype, block.shape)
            assert np.isfinite(block).all(), "non-finite samples escaped"
            total += len(block)
        assert total > 0
        # Generous bound: the decoded length should match the header's length (lossy: estimate).
        assert total <= inf.duration * audio.SAMPLE_RATE * 1.5 + 48000, (total, inf.duration)
        part = audio.load(p, start=inf.duration / 3, end=inf.duration / 2 + 0.01)
        assert part.ndim == 1
    except WhispdiarError as e:
        assert "\n" not in str(e), f"multi-line error message: {e!r}"


def run_worker(args: argparse.Namespace) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    # A damaged header must not make the loader allocate without bound: cap the address space.
    limit = args.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = Path(args.out)
    seeds = [(f[0], make_seed(f)) for f in SEEDS]
    current = out / "current.bin"
    workdir = Path(tempfile.mkdtemp(prefix="whispdiar-fuzz-"))
    deadline = time.monotonic() + args.seconds
    stats = {"cases": 0, "accepted": 0}

    @st.composite
    def inputs(draw: st.DrawFn) -> tuple[bytes, str]:
        if draw(st.integers(0, 9)) == 0:  # plain random bytes, any extension
            return draw(st.binary(max_size=4096)), draw(st.sampled_from(["wav", "flac", "mp3", "ogg", "bin"]))
        ext, base = draw(st.sampled_from(seeds))
        b = bytearray(base)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.integers(0, 5))
            n = len(b)
            if n == 0:
                break
            # Headers hold most of the interesting fields: bias positions towards the start.
            pos = draw(st.one_of(st.integers(0, min(n - 1, 96)), st.integers(0, n - 1)))
            if op == 0:  # bit flip
                b[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:  # interesting 32-bit value
                val = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 3, 768001]))
                b[pos : pos + 4] = val.to_bytes(4, "little")
            elif op == 2:  # truncate
                del b[pos:]
            elif op == 3:  # random bytes overwrite
                b[pos : pos + 16] = draw(st.binary(min_size=1, max_size=16))
            elif op == 4:  # duplicate a range
                end = draw(st.integers(pos, min(n, pos + 4096)))
                b[pos:pos] = b[pos:end]
            else:  # delete a range
                del b[pos : draw(st.integers(pos, min(n, pos + 512)))]
        return bytes(b), ext

    found: list[str] = []

    def target(case: tuple[bytes, str]) -> None:
        data, ext = case
        if time.monotonic() > deadline:
            return
        current.write_bytes(data)
        (out / "current.ext").write_text(ext)
        stats["cases"] += 1
        try:
            check_one(data, ext, workdir)
        except MemoryError:
            raise AssertionError("MemoryError: unbounded allocation") from None

    round_no = 0
    while time.monotonic() < deadline:
        round_no += 1

        @settings(max_examples=args.batch, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @hseed(args.seed * 100003 + round_no)
        @given(inputs())
        def fuzz(case: tuple[bytes, str]) -> None:
            target(case)

        try:
            fuzz()
        except Exception as e:  # Hypothesis re-raises the shrunk failure: save its input
            data = current.read_bytes()
            ext = (out / "current.ext").read_text()
            digest = hashlib.sha1(data).hexdigest()[:10]
            case = out / f"bug-{digest}.{ext}"
            case.write_bytes(data)
            case.with_name(case.name + ".txt").write_text("".join(traceback.format_exception(e)))
            found.append(case.name)
            print(f"fuzz: BUG {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} -> {case}",
                  file=sys.stderr)
    current.unlink(missing_ok=True)
    for p in workdir.iterdir():
        p.unlink()
    workdir.rmdir()
    (out / f"worker-{os.getpid()}.json").write_text(json.dumps({**stats, "bugs": found}))


# --------------------------------------------------------------------------- supervisor
def supervise(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + args.seconds
    cases = crashes = hangs = 0
    bugs: list[str] = []
    restarts = 0
    while (left := end - time.monotonic()) > 1:
        cmd = [sys.executable, __file__, "--worker", "--seconds", f"{left:.1f}", "--seed", str(args.seed + restarts),
               "--out", str(out), "--batch", str(args.batch), "--memory-mb", str(args.memory_mb)]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        current = out / "current.bin"
        last_change, last_sig = time.monotonic(), None
        while proc.poll() is None:
            time.sleep(0.5)
            try:
                sig = current.stat().st_mtime_ns
            except OSError:
                sig = None
            if sig != last_sig:
                last_sig, last_change = sig, time.monotonic()
            elif time.monotonic() - last_change > args.hang:
                proc.kill()
                proc.wait()
                hangs += 1
                _save(out, "hang")
                break
        err = proc.stderr.read() if proc.stderr else ""
        sys.stderr.write(err)
        if proc.returncode not in (0, None) and proc.returncode != -9:
            crashes += 1
            name = _save(out, "crash")
            print(f"fuzz: worker died with {proc.returncode} on {name}; restarting", file=sys.stderr)
        for rep in out.glob("worker-*.json"):
            r = json.loads(rep.read_text())
            cases += r["cases"]
            bugs += r["bugs"]
            rep.unlink()
        restarts += 1
    (out / "current.bin").unlink(missing_ok=True)
    (out / "current.ext").unlink(missing_ok=True)
    print(f"fuzz: {cases} inputs in {args.seconds:.0f} s, {len(set(bugs))} bug(s), {crashes} crash(es), "
          f"{hangs} hang(s); findings in {out}" if (bugs or crashes or hangs) else
          f"fuzz: {cases} inputs in {args.seconds:.0f} s, no findings", file=sys.stderr)
    return 1 if bugs or crashes or hangs else 0


def _save(out: Path, kind: str) -> str:
    cur = out / "current.bin"
    if not cur.exists():
        return "(unknown input)"
    data = cur.read_bytes()
    ext = (out / "current.ext").read_text() if (out / "current.ext").exists() else "bin"
    p = out / f"{kind}-{hashlib.sha1(data).hexdigest()[:10]}.{ext}"
    p.write_bytes(data)
    return p.name


def replay(path: Path) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="whispdiar-replay-"))
    try:
        check_one(path.read_bytes(), path.suffix.lstrip(".") or "bin", workdir)
    finally:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    print(f"{path}: ok (loader returned audio or a WhispdiarError)")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="total fuzzing time")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "fuzz"))
    ap.add_argument("--batch", type=int, default=300, help="examples per Hypothesis round")
    ap.add_argument("--hang", type=float, default=30.0, help="seconds without progress that count as a hang")
    ap.add_argument("--memory-mb", type=int, default=3072, help="address-space cap of the worker")
    ap.add_argument("--replay", type=Path, default=None, help="run the loader on one saved input and exit")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replay:
        sys.exit(replay(args.replay))
    if args.worker:
        run_worker(args)
        return
    print(f"fuzz: seed {args.seed}, {args.seconds:.0f} s", file=sys.stderr)
    sys.exit(supervise(args))


if __name__ == "__main__":
    main()
