"""whispdiar live: the session API, its races, and the command on paced real audio.

Bounds are behaviour, not timings (the machine may be loaded or 3x slower): lines come
out before the input ends, the lag after the input ends stays bounded, the saved
recording equals the input. Timing figures are in scripts/bench_live.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import models_installed

from whispdiar.asr.vad import SileroVad
from whispdiar.audio import read as audio
from whispdiar.live import Final, Finished, LiveConfig, LiveEngines, LiveSession, SpeakerUpdate
from whispdiar.live.finalize import build_result, changed, cluster_utterances, recluster
from whispdiar.live.run import clock
from whispdiar.live.utterances import EndpointConfig, Endpointer

DATA = Path(__file__).parent / "data"
CLI = [sys.executable, "-m", "whispdiar"]
NEEDED = ("tiny.en", "base", "segmentation-3.0", "campplus", "silero-vad")
pytestmark = pytest.mark.skipif(not models_installed(*NEEDED), reason="models not installed (make models)")


def _load(name: str) -> np.ndarray:
    return audio.load(DATA / name)


@pytest.fixture(scope="module")
def two_readers() -> np.ndarray:
    """Two LibriSpeech readers (1998 F, 2033 M) taking turns, 0.8 s apart (~45 s)."""
    gap = np.zeros(12800, np.float32)
    parts = []
    for f in ("ls-1998-15444-0001.flac", "ls-2033-164914-0003.flac", "ls-1998-15444-0003.flac",
              "ls-2033-164914-0009.flac"):
        parts += [_load(f), gap]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def engines() -> LiveEngines:
    e = LiveEngines.load("tiny.en", threads=2)
    yield e
    e.close()


def _feed_all(session: LiveSession, x: np.ndarray, block: int = 1600) -> None:
    for i in range(0, len(x), block):
        session.feed(x[i:i + block])


# --------------------------------------------------------------------------- pieces

def test_vad_stream_equals_one_pass(vad_model_path: Path) -> None:
    x = _load("jfk.wav")
    vad = SileroVad(vad_model_path, threads=1, lanes=1)
    stream = vad.stream()
    pieces = np.concatenate([stream.feed(x[i:i + 777]) for i in range(0, len(x), 777)])
    whole = vad.probabilities(x)
    assert len(pieces) == len(x) // 512
    np.testing.assert_allclose(pieces, whole[:len(pieces)], atol=1e-5)


def test_endpointer_cuts_at_pauses_and_flushes(vad_model_path: Path, two_readers: np.ndarray) -> None:
    ep = Endpointer(SileroVad(vad_model_path, threads=1, lanes=1).stream())
    cut = [u for i in range(0, len(two_readers), 1600) for u in ep.feed(two_readers[i:i + 1600])]
    assert len(cut) >= 4  # at least the four readings, some cut at 6 s
    assert all(u.duration <= 6.5 for u in cut)
    assert all(a.end <= b.start + 0.4 for a, b in zip(cut, cut[1:], strict=False))  # in order, padding only
    assert ep.flush() is None  # the input ended in silence: nothing open
    # Speech to the very end: the open utterance comes out at flush.
    ep2 = Endpointer(SileroVad(vad_model_path, threads=1, lanes=1).stream())
    x = _load("jfk.wav")[: int(10.6 * 16000)]  # cut inside "your country"
    early = [u for i in range(0, len(x), 1600) for u in ep2.feed(x[i:i + 1600])]
    last = ep2.flush()
    assert last is not None and last.end == pytest.approx(10.6, abs=0.05)
    assert all(u.end <= last.start + 0.4 for u in early)


def test_endpointer_cuts_at_a_change_of_voice_without_a_pause(vad_model_path: Path,
                                                              segmentation_model_path: Path) -> None:
    """Two readers back to back with no endpoint pause: with segmentation-3.0's change points the
    first reader's utterance closes near the change, before the 6-s cut would, and while
    the second still speaks (not at flush)."""
    from whispdiar.diarization.segmentation import Segmenter
    from whispdiar.live.turns import change_points

    a = _load("ls-1998-15444-0001.flac")[: 4 * 16000]
    b = _load("ls-2033-164914-0003.flac")[: 5 * 16000]
    x = np.concatenate([a, b])
    seg = Segmenter(segmentation_model_path, 1)
    # the forced cut out of the way, and the endpoint silence longer than the 0.48 s
    # before the second reader's first word: only a change of voice can close it there
    long = EndpointConfig(max_seconds=8.0, min_silence=0.6)
    ep = Endpointer(SileroVad(vad_model_path, threads=1, lanes=1).stream(), long,
                    changes=lambda y: change_points(seg, y))
    cut = [u for i in range(0, len(x), 1600) for u in ep.feed(x[i:i + 1600])]
    assert cut, "nothing closed before the input ended"
    assert abs(cut[0].end - 4.0) < 0.6, [(u.start, u.end) for u in cut]
    plain = Endpointer(SileroVad(vad_model_path, threads=1, lanes=1).stream(), long)  # without: no cut before 8 s
    first = next(u for i in range(0, len(x), 1600) for u in plain.feed(x[i:i + 1600]))
    assert first.end > 5.0


def test_final_labels_are_numbered_by_first_appearance() -> None:
    from whispdiar.live.finalize import dense_names

    assert dense_names(["Speaker 4", "Speaker 2", "Jan", "Speaker 4", "Speaker 7"], ["Jan"]) == \
        ["Speaker 1", "Speaker 2", "Jan", "Speaker 1", "Speaker 3"]
    # an enrolled name that looks anonymous keeps its number to itself
    assert dense_names(["Speaker 3", "Speaker 1"], ["Speaker 1"]) == ["Speaker 2", "Speaker 1"]


def test_clock() -> None:
    assert clock(6.78) == "00:06.8"
    assert clock(3725.04) == "1:02:05.0"


# --------------------------------------------------------------------------- session API

def test_session_two_speakers_in_order(engines: LiveEngines, two_readers: np.ndarray) -> None:
    with LiveSession(engines) as s:
        _feed_all(s, two_readers)
        s.end()
        events = list(s.events())
    finals = [e.utterance for e in events if isinstance(e, Final)]
    assert isinstance(events[-1], Finished) and not events[-1].aborted
    assert [u.start for u in finals] == sorted(u.start for u in finals)
    # a line shows its first word's time: after the cut's 0.2-s lead-in, in time order
    shown = [u.speech_start for u in finals]
    assert shown == sorted(shown)
    assert all(u.start <= t <= u.end for u, t in zip(finals, shown, strict=True))
    assert np.mean([t - u.start for u, t in zip(finals, shown, strict=True)]) >= 0.1
    assert len({u.name for u in finals}) >= 2
    news = [e for e in events if isinstance(e, SpeakerUpdate)]
    assert len(news) == len({u.label for u in finals})  # every speaker announced once
    text = " ".join(u.text for u in finals).lower()
    assert "recited" in text and "investigation" in text
    # instant tier: every line keeps a speaker, two voices over the whole run
    names = recluster(finals, {})
    assert len(set(names)) == 2
    result = build_result(finals, names, "live", len(two_readers) / 16000, "en", {})
    assert {s.name for s in result.speakers} == set(names)
    assert changed([u.name for u in finals], names).lines == len(finals)


def test_idle_means_every_line_fed_so_far_is_out(engines: LiveEngines) -> None:
    """``idle`` turns true only once the utterance that a pause closed has its line out."""
    x = np.concatenate([_load("jfk.wav"), np.zeros(16000, np.float32)])  # 1 s of silence closes it
    with LiveSession(engines) as s:
        _feed_all(s, x)
        assert not s.idle
        deadline = time.monotonic() + 60
        while not s.idle and time.monotonic() < deadline:
            time.sleep(0.005)
        assert s.idle
        finals = []
        while (e := s.get(timeout=0)) is not None:
            finals += [e] if isinstance(e, Final) else []
        assert finals and "country" in finals[-1].utterance.text.lower()


def test_language_is_detected_over_the_speech_heard(whisper_base_path: Path, engines: LiveEngines) -> None:
    """A multilingual model with no language given: whisper's guess with its probability
    (one encoder pass), English-only models have none; a live session decodes German
    speech as German."""
    from whispdiar.asr.whisper import Transcriber

    with Transcriber(whisper_base_path, threads=2, lanes=1) as tr:
        code, p = tr.detect_language(_load("jfk.wav"))
        assert code == "en" and p >= 0.9
        assert tr.detect_language(_load("de-leopard.flac"))[0] == "de"
    assert engines.transcriber.detect_language(_load("jfk.wav")) == (None, 0.0)  # tiny.en
    eng = LiveEngines.load("base", segmentation=None, threads=2)
    try:
        assert eng.transcriber.multilingual
        with LiveSession(eng) as s:
            _feed_all(s, np.concatenate([_load("de-leopard.flac"), np.zeros(16000, np.float32)]))
            s.end()
            finals = [e.utterance for e in s.events() if isinstance(e, Final)]
        assert finals and s.language == "de"
    finally:
        eng.close()


def test_stalled_then_closed_input_flushes_last_utterance(engines: LiveEngines) -> None:
    """Speech up to the last sample, then nothing for a while, then end(): the last
    utterance still comes out (no endpoint silence ever arrived)."""
    x = _load("jfk.wav")
    x = x[: int(10.6 * 16000)]  # cut inside "your country"
    with LiveSession(engines) as s:
        _feed_all(s, x)
        time.sleep(1.0)  # stalled input: no silence arrives, no endpoint
        s.end()
        finals = [e.utterance for e in s.events() if isinstance(e, Final)]
    assert finals and "country" in " ".join(u.text for u in finals).lower()
    assert finals[-1].end == pytest.approx(10.6, abs=0.1)


def test_close_while_decoding_does_not_free_whisper_under_it(two_readers: np.ndarray) -> None:
    """The race that bit the project: free a whisper context while a decode runs. Close
    the session (and its engines) the moment whisper starts; the decode aborts, the
    context is freed by its own thread afterwards, and the process lives on."""
    for _ in range(3):
        eng = LiveEngines.load("base", threads=2)
        s = LiveSession(eng, LiveConfig(threads=1), own_engines=True)
        _feed_all(s, two_readers)
        s.end()
        assert s.decoding.wait(60)
        s.close(wait=0.0)  # do not even wait for the decode
        events = list(s.events())
        assert isinstance(events[-1], Finished) and events[-1].aborted
        s.close()  # twice is fine
        assert eng.transcriber._closed
    # a transcriber closed mid-decode refuses further work cleanly
    with pytest.raises(Exception, match="closed"):
        eng.transcriber.decode(np.zeros(16000, np.float32), "en")


def test_end_while_embedding(engines: LiveEngines) -> None:
    """End the input while utterances are being embedded and decoded: all of them still
    come out, then Finished."""
    x = _load("ls-2033-164914-0000.flac")
    with LiveSession(engines) as s:
        done = threading.Event()

        def feed() -> None:
            _feed_all(s, x, block=160)
            done.set()

        t = threading.Thread(target=feed)
        t.start()
        s.end()  # races the feeder: what arrived before end() is processed, the rest ignored
        t.join()
        events = list(s.events())
    assert isinstance(events[-1], Finished) and not events[-1].aborted


def test_cluster_utterances_two_voices(engines: LiveEngines) -> None:
    from whispdiar.diarization.embedding import fbank

    embs, who = [], []
    for f in sorted(DATA.glob("ls-*.flac")):
        if f.name.startswith(("ls-1998", "ls-2033")):
            embs.append(engines.embedder.embed_features(fbank(_load(f.name))))
            who.append(f.name[3:7])
    x = np.stack(embs) / np.linalg.norm(np.stack(embs), axis=1, keepdims=True)
    c = cluster_utterances(x, np.full(len(x), 5.0))
    assert c.num_clusters == 2
    assert len({(w, int(k)) for w, k in zip(who, c.labels, strict=True)}) == 2


# --------------------------------------------------------------------------- command line

def _pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


def _paced(proc: subprocess.Popen, data: bytes, speed: float = 1.0, stop: threading.Event | None = None,
           sent: list[int] | None = None) -> threading.Thread:
    """Write ``data`` (s16le 16 kHz mono) into the process at ``speed`` x real time."""

    def run() -> None:
        t0 = time.monotonic()
        step = 3200  # 0.1 s
        try:
            for i in range(0, len(data), step):
                if stop is not None and stop.is_set():
                    break
                proc.stdin.write(data[i:i + step])
                proc.stdin.flush()
                if sent is not None:
                    sent.append(i + len(data[i:i + step]))
                delay = (i + step) / 32000 / speed - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _lines(stdout: str) -> list[tuple[float, str, str]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("["):
            stamp, rest = line[1:].split("] ", 1)
            m, s = stamp.split(":")
            name, text = rest.split(": ", 1)
            out.append((int(m) * 60 + float(s), name, text))
    return out


@pytest.mark.slow
def test_paced_stdin_run_two_speakers_refined_json(tmp_path: Path) -> None:
    x = _load("diar_sample.flac")
    data = _pcm(x)
    proc = subprocess.Popen(CLI + ["live", "-", "--format", "s16le", "--rate", "16000", "-m", "tiny.en",
                                   "-f", "json", "-d", str(tmp_path), "--save", str(tmp_path / "rec.wav"),
                                   "--speakers-db", str(tmp_path / "none.db")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    feeder = _paced(proc, data)
    out_lines: list[bytes] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout.readlines()), daemon=True)
    reader.start()
    feeder.join()
    input_end = time.monotonic()
    assert proc.wait(240) == 0, proc.stderr.read().decode()
    reader.join(5)
    stdout = b"".join(out_lines).decode()
    stderr = proc.stderr.read().decode()
    lines = _lines(stdout)
    assert len(lines) >= 4, stdout
    assert [t for t, _, _ in lines] == sorted(t for t, _, _ in lines)
    assert len({n for _, n, _ in lines}) >= 2
    assert input_end - t0 >= 29  # it was paced
    doc = json.loads((tmp_path / "rec.json").read_text())
    assert len(doc["speakers"]) == 2 and doc["segments"]
    assert "instant tier changed the speaker of" in stderr.splitlines()[-1]
    assert "refined tier of" in stderr.splitlines()[-1]
    # the saved recording is the input, byte for byte
    saved, sr = sf.read(tmp_path / "rec.wav", dtype="int16")
    assert sr == 16000 and saved.tobytes() == data


@pytest.mark.slow
def test_lines_come_before_the_input_ends(tmp_path: Path, two_readers: np.ndarray) -> None:
    data = _pcm(two_readers)
    proc = subprocess.Popen(CLI + ["live", "-", "--format", "s16le", "-m", "tiny.en", "-q"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    arrived: list[float] = []

    def read() -> None:
        for _ in proc.stdout:
            arrived.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    feeder = _paced(proc, data, speed=1.5)
    feeder.join()
    end = time.monotonic()
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    reader.join(5)
    assert arrived and sum(t < end for t in arrived) >= 2  # live, not at the end


@pytest.mark.slow
def test_ctrl_c_mid_run_writes_both_tiers_and_the_recording(tmp_path: Path, two_readers: np.ndarray) -> None:
    data = _pcm(two_readers)
    proc = subprocess.Popen(CLI + ["live", "-", "--format", "s16le", "-m", "tiny.en", "-f", "json", "-f", "txt",
                                   "-d", str(tmp_path), "--save", str(tmp_path / "rec.wav"),
                                   "--speakers-db", str(tmp_path / "none.db")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop = threading.Event()
    sent: list[int] = []
    feeder = _paced(proc, data, speed=2.0, stop=stop, sent=sent)
    time.sleep(10)  # ~20 s of audio in
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    stop.set()
    feeder.join(5)
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "Traceback" not in text and "stopping" in text and "refined tier of" in text
    doc = json.loads((tmp_path / "rec.json").read_text())
    assert doc["segments"]
    saved, sr = sf.read(tmp_path / "rec.wav", dtype="int16")
    got = saved.tobytes()
    # complete: a valid WAV holding exactly what came in before Ctrl-C (a prefix of the input)
    assert len(got) >= 16000 * 2 * 8 and data.startswith(got)
    assert (tmp_path / "rec.txt").read_text().startswith("# speakers:")
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.slow
def test_too_slow_setting_degrades_and_says_so(tmp_path: Path, two_readers: np.ndarray) -> None:
    """base on one thread, fed at 3x real time: it falls behind, says so on stderr, and
    its lag after the input ends stays bounded (it does not decode a growing queue)."""
    data = _pcm(np.concatenate([two_readers, two_readers]))  # ~90 s: 30 s of wall time
    proc = subprocess.Popen(CLI + ["live", "-", "--format", "s16le", "-m", "base", "--threads", "1", "-q"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = _paced(proc, data, speed=3.0)
    feeder.join()
    end = time.monotonic()
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(300)
    tail = time.monotonic() - end
    assert proc.returncode == 0, err.decode()
    assert "falling behind" in err.decode()
    assert len(_lines(out.decode())) >= 5
    # Without degradation the ~25 utterances would each cost a whole base encoder pass
    # after the input ended; merged chunks and the backlog limit keep the tail short.
    assert tail < 60, tail


@pytest.mark.parametrize("args, code, words", [
    (["live", "-", "--format", "s24be"], 2, "unknown raw format"),
    (["live", "--device", "default"], 1, "libportaudio2"),
    (["live", "/nonexistent/x.wav"], 2, "no such file"),
    (["live", "-", "--format", "s16le", "-f", "json"], 2, "needs --output-dir"),
    (["live", "-"], 4, "cannot open it as audio"),
])
def test_bad_input_one_line_error(args: list[str], code: int, words: str) -> None:
    if "--device" in args:
        try:
            import sounddevice  # noqa: F401
            pytest.skip("PortAudio is installed here: no error to see")
        except (ImportError, OSError):
            pass
    r = subprocess.run(CLI + args, input=b"this is not audio at all" * 50, capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_anonymous_speaker_is_recognised_once_its_voice_is_clear() -> None:
    """A first utterance too unlike the voiceprint starts "Speaker 1"; once that speaker's
    centroid holds enough speech and matches the enrolled voice, it takes the name (the
    event says what it was), and "Speaker 1" is not given to anyone else."""
    from whispdiar.live.online_speakers import OnlineSpeakers
    from whispdiar.speakers.naming import Voiceprint

    rng = np.random.default_rng(3)
    jan, other = rng.normal(size=192), rng.normal(size=192)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    prints = {"Jan": Voiceprint.from_embeddings("Jan", unit(jan)[None].astype(np.float32), 10.0)}
    sp = OnlineSpeakers(voiceprints=prints)
    weak = unit(unit(jan) * 0.3 + unit(rng.normal(size=192)))  # cosine to Jan's print ~0.3
    a = sp.assign(weak, 1.2)
    assert a.new and a.speaker.name == "Speaker 1" and not a.speaker.enrolled
    names = []
    for _ in range(4):  # clear utterances of Jan, close enough to join Speaker 1
        b = sp.assign(unit(unit(jan) + 0.45 * unit(weak) + 0.3 * unit(rng.normal(size=192))), 1.5)
        names.append((b.speaker.name, b.renamed_from))
    assert ("Jan", "Speaker 1") in names, names
    assert names[-1] == ("Jan", None)  # renamed once, then simply Jan
    c = sp.assign(unit(other), 2.0)
    assert c.new and c.speaker.name == "Speaker 2"  # the retired label is not reused
