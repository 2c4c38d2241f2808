"""Decoding benchmark: PyAV (FFmpeg in-process) against libsndfile, and peak RSS of an .m4a run.

From one long WAV (``--wav``, e.g. the 60-min meeting of scripts/make_meetings.py) it
writes the same audio as FLAC (libsndfile) and as AAC in .m4a (PyAV, 16 kHz mono,
64 kbit/s: the same signal, so the runs differ only in the decoder) plus a 48 kHz AAC
.m4a (the rate of a Zoom/Teams/phone export), then measures:

  speed   seconds to decode each file to 16 kHz mono float32 through ``audio.stream``
          (the route whispdiar takes), and WAV/FLAC also through the PyAV route, so the
          choice of libsndfile for them is a measured one. In-process, best of --repeat,
          after one untimed read so the file is in the page cache for every decoder.
  rss     peak RSS (kernel high-water mark of a child, scripts/bench_memory.py's
          measure()) of the loader alone and of ``whispdiar diarize`` on the WAV and on
          the 16 kHz .m4a.

  python scripts/bench_decode.py --wav /tmp/wd-long60/long60min.wav --only speed,rss
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import LOADER, measure  # noqa: E402

SR = 16000


def transcode(wav: Path, out: Path, rate: int, bit_rate: int) -> float:
    """WAV -> AAC .m4a with PyAV, block by block; returns the seconds it took."""
    import av

    t0 = time.perf_counter()
    with sf.SoundFile(wav) as f, av.open(str(out), "w") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        s.codec_context.bit_rate = bit_rate
        rs = av.AudioResampler(format="fltp", layout="mono", rate=rate, frame_size=1024)
        done = 0
        while True:
            block = f.read(f.samplerate * 30, dtype="float32", always_2d=True)
            frames = rs.resample(None) if not len(block) else []
            if len(block):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.mean(axis=1)[None]), format="fltp",
                                                layout="mono")
                fr.sample_rate = f.samplerate
                frames = rs.resample(fr)
            for frame in frames:
                frame.pts, frame.time_base = done, Fraction(1, rate)
                done += frame.samples
                for pkt in s.encode(frame):
                    c.mux(pkt)
            if not len(block):
                break
        for pkt in s.encode(None):
            c.mux(pkt)
    return time.perf_counter() - t0


def to_flac(wav: Path, out: Path) -> float:
    t0 = time.perf_counter()
    with sf.SoundFile(wav) as f, sf.SoundFile(out, "w", f.samplerate, f.channels, subtype="PCM_16",
                                               format="FLAC") as o:
        for block in f.blocks(f.samplerate * 30, dtype="int16"):
            o.write(block)
    return time.perf_counter() - t0


def decode_seconds(path: Path, route: str, repeat: int) -> tuple[float, float]:
    """(best seconds, decoded audio seconds) to read ``path`` to 16 kHz mono via ``route``."""
    from whispdiar.audio import decode
    from whispdiar.audio import read as audio

    def run() -> int:
        if route == "pyav":
            blocks = audio._stream_av(path, decode.probe(path), audio.BLOCK_SECONDS, None, 0.0, None)
        else:
            blocks = audio.stream(path)
        return sum(len(b) for b in blocks)

    with open(path, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    best = float("inf")
    n = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = run()
        best = min(best, time.perf_counter() - t0)
    return best, n / SR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wav", type=Path, required=True, help="a long 16 kHz WAV (e.g. make_meetings.py output)")
    ap.add_argument("--only", default="speed,rss")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = {r.strip() for r in args.only.split(",")}
    work = Path(tempfile.mkdtemp(prefix="whispdiar-bench-decode-", dir=args.workdir))
    wav = args.wav
    flac, m4a, m4a48 = work / "long.flac", work / "long.m4a", work / "long-48k.m4a"
    results: dict[str, object] = {"audio_s": sf.info(wav).duration, "nproc": os.cpu_count()}
    try:
        results["make_flac_s"] = round(to_flac(wav, flac), 1)
        results["make_m4a_s"] = round(transcode(wav, m4a, SR, 64000), 1)
        results["make_m4a48_s"] = round(transcode(wav, m4a48, 48000, 96000), 1)
        results["sizes_mb"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in (wav, flac, m4a, m4a48)}
        print(json.dumps(results), file=sys.stderr)
        if "speed" in runs:
            speed = []
            for path, routes in ((wav, ("default", "pyav")), (flac, ("default", "pyav")), (m4a, ("default",)),
                                 (m4a48, ("default",))):
                for route in routes:
                    secs, audio_s = decode_seconds(path, route, args.repeat)
                    decoder = "PyAV" if route == "pyav" or path.suffix == ".m4a" else "libsndfile"
                    decoder += " (whispdiar's route)" if route == "default" else ""
                    row = {"file": path.name, "route": decoder, "seconds": round(secs, 2),
                           "audio_s": round(audio_s, 1), "x_realtime": round(audio_s / secs)}
                    speed.append(row)
                    print(json.dumps(row), file=sys.stderr)
            results["speed"] = speed
        if "rss" in runs:
            cli = [sys.executable, "-m", "whispdiar.cli"]
            rss = []
            for path in (wav, m4a):
                for label, argv in (
                    ("loader", [sys.executable, "-c", LOADER, str(path)]),
                    ("diarize", cli + ["diarize", "-q", "--threads", str(args.threads), "-f", "rttm",
                                       "-o", str(work / "out.rttm"), str(path)]),
                ):
                    print(f"running {label} on {path.name} ...", file=sys.stderr)
                    res = measure(argv, f"{label} {path.name}")
                    rss.append(res)
                    print(json.dumps(res), file=sys.stderr)
            results["rss"] = rss
    finally:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
    if "speed" in results:
        print("\n| file | decoder | seconds | × real time |\n|---|---|---:|---:|")
        for r in results["speed"]:  # type: ignore[union-attr]
            print(f"| {r['file']} | {r['route']} | {r['seconds']} | {r['x_realtime']} |")
    if "rss" in results:
        print("\n| run | peak RSS | polled peak | wall | exit |\n|---|---:|---:|---:|---:|")
        for r in results["rss"]:  # type: ignore[union-attr]
            print(f"| {r['run']} | {r['peak_rss_mb']} MB | {r['polled_peak_mb']} MB | {r['wall_s']} s | {r['exit']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
