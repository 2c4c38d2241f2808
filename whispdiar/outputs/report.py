"""The HTML report (``-f html``): one self-contained file that works offline.

A timeline with one lane per speaker, the talk-time bars (whispdiar/outputs/stats.py), the
transcript with names and times, and a search box; clicking (or Enter/Space on) a line
or a timeline bar plays the recording from there. All CSS and JS are inline, no network.
Every piece of transcript text is HTML-escaped here; the script only reads attributes.

The recording is referenced relative to the HTML file (``audio_reference``), or inlined
as a ``data:`` URI (``embed_audio``: Opus in WebM via PyAV, WAV without PyAV).
"""

from __future__ import annotations

import base64
import io
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import OutputError
from ..records import Result, Turn
from . import stats

# Speaker colours: each has a contrast of at least 4.5:1 on white (WCAG AA for text, so
# also for the 3:1 that bars need), checked in tests/test_report.py.
PALETTE = ("#1f5fa8", "#b3411b", "#2e7d32", "#7b3fa0", "#7a5f00", "#00707a", "#a3245c", "#4f5b66")
OPUS_BITRATE = 16_000  # bit/s, mono 16 kHz: about 120 KB per minute (160 KB as base64)


def audio_reference(audio: str | os.PathLike[str], html_path: str | os.PathLike[str] | None) -> str:
    """The URL of the file ``audio`` relative to the directory of ``html_path`` (the
    current directory when the page goes to stdout)."""
    base = Path(html_path).resolve().parent if html_path is not None else Path.cwd()
    rel = os.path.relpath(Path(audio).resolve(), base)
    return quote(Path(rel).as_posix())


def embed_audio(path: str | os.PathLike[str], channel: int | None = None) -> str:
    """The recording as a ``data:`` URI: 16 kHz mono Opus in WebM (``OPUS_BITRATE``), or
    16-bit WAV when PyAV (``av``) is not installed (about 1.9 MB per minute)."""
    from ..audio import read as audio

    blocks = audio.stream(path, channel=channel)
    try:
        import av
    except ImportError:
        return "data:audio/wav;base64," + base64.b64encode(_wav(blocks)).decode("ascii")
    try:
        data = _webm_opus(blocks)
    except av.FFmpegError as e:
        raise OutputError(f"cannot encode {path} for --embed-audio: {e}") from None
    return "data:audio/webm;codecs=opus;base64," + base64.b64encode(data).decode("ascii")


def _webm_opus(blocks) -> bytes:  # type: ignore[no-untyped-def]
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        st = out.add_stream("libopus", rate=16000, layout="mono")
        st.bit_rate = OPUS_BITRATE
        for block in blocks:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, dtype=np.float32)[None, :],
                                               format="flt", layout="mono")
            frame.rate = 16000
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _wav(blocks) -> bytes:  # type: ignore[no-untyped-def]
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=16000, channels=1, format="WAV", subtype="PCM_16") as f:
        for block in blocks:
            f.write(block)
    return buf.getvalue()


# ----------------------------------------------------------------------------- page


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _pct(t: float, duration: float) -> float:
    return 0.0 if duration <= 0 else max(0.0, min(100.0, t / duration * 100.0))


def _ticks(duration: float) -> list[float]:
    if duration <= 0:
        return [0.0]
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 5:  # room for the labels on a phone
            break
    return [i * step for i in range(int(duration // step) + 1)]


def render_html(result: Result, audio_src: str | None = None, embedded: str | None = None) -> str:
    """The report page. ``audio_src``: URL of the recording (relative to the page);
    ``embedded``: a ``data:`` URI used instead (the page turns it into a blob URL)."""
    talk = stats.talk_time(result)
    colour = {s.label: PALETTE[i % len(PALETTE)] for i, s in enumerate(talk.speakers)}
    dur = max(float(result.duration), max((t.end for t in result.turns), default=0.0),
              max((s.end for s in result.segments), default=0.0))
    title = Path(result.audio).name or result.audio
    if result.turns:
        bars = list(result.turns)
    else:
        bars = [Turn(s.start, s.end, s.speaker) for s in result.segments if s.speaker is not None and s.end > s.start]

    lanes = []
    for s in talk.speakers:
        items = []
        for t in bars:
            if t.speaker != s.label:
                continue
            label = f"{s.name}, {stats.minutes(t.start)} to {stats.minutes(t.end)}"
            items.append(f'<button type="button" class="bar" data-start="{t.start:.3f}" '
                         f'style="left:{_pct(t.start, dur):.3f}%;width:{_pct(t.end - t.start, dur):.3f}%;'
                         f'background:{colour[s.label]}" aria-label="{_e(label)}" title="{_e(label)}"></button>')
        lanes.append(f'<div class="lane" data-speaker="{_e(s.name)}"><span class="lane-name" '
                     f'style="border-color:{colour[s.label]}">{_e(s.name)}</span>'
                     f'<div class="track">{"".join(items)}<span class="playhead" hidden></span></div></div>')
    axis = "".join(f'<span style="left:{_pct(t, dur):.3f}%"{" class=end" * (_pct(t, dur) > 90)}>'
                   f'{stats.minutes(t)}</span>' for t in _ticks(dur))  # labels near the end stay inside the page

    talk_rows = []
    for s in talk.speakers:
        wpm = "" if s.words_per_minute is None else f" · {s.words_per_minute:.0f} wpm"
        share = 0.0 if s.share is None else s.share * 100
        talk_rows.append(
            f'<li class="talk-row"><span class="talk-name">{_e(s.name)}</span>'
            f'<span class="talk-bar" aria-hidden="true"><span style="width:{share:.2f}%;'
            f'background:{colour[s.label]}"></span></span>'
            f'<span class="talk-figures">{stats.span(s.speech_seconds)} · {stats.percent(s.share)} · '
            f'{s.turns} turn{"s" * (s.turns != 1)} · {s.words} words{wpm} · longest '
            f'{stats.span(s.longest_turn_seconds)} · overlap {stats.span(s.overlap_seconds)}</span></li>')

    lines = []
    for seg in result.segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        name = result.speaker_name(seg.speaker)
        who = (f'<span class="who" style="color:{colour.get(seg.speaker or "", PALETTE[-1])}">{_e(name)}</span>'
               if name else '<span class="who"></span>')
        lines.append(f'<li class="line" tabindex="0" data-start="{seg.start:.3f}" data-end="{seg.end:.3f}">'
                     f'<span class="time">{stats.minutes(math.floor(seg.start))}</span>{who}'
                     f'<span class="text">{_e(text)}</span></li>')

    if embedded is not None:
        player = ('<audio id="player" controls preload="metadata"></audio>'
                  f'<script type="text/plain" id="embedded-audio">{_e(embedded)}</script>')
    elif audio_src is not None:
        player = f'<audio id="player" controls preload="metadata" src="{_e(audio_src)}"></audio>'
    else:
        player = '<p class="note">No recording in this report (standard input); use --embed-audio to include it.</p>'

    meta = [stats.minutes(dur), f"{len(talk.speakers)} speaker{'s' * (len(talk.speakers) != 1)}"]
    if result.language:
        meta.append(f"language {result.language}")
    if result.models.get("whisper"):
        meta.append(f"whisper {result.models['whisper']}")
    summary = (f"speech {stats.span(talk.speech_seconds)}, overlap {stats.span(talk.overlap_seconds)}"
               if talk.speakers else "no speakers")
    return _PAGE.format(
        title=_e(title), meta=_e(" · ".join(meta)), summary=_e(summary), player=player,
        lanes="".join(lanes) or '<p class="note">No speakers (transcribed without diarization).</p>',
        duration=f"{dur:.3f}", axis=axis, talk="".join(talk_rows), lines="".join(lines), count=len(lines),
        css=_CSS, js=_JS,
    )


_CSS = """
:root { color-scheme: light; --fg: #1b1b1b; --muted: #595959; --line: #d0d0d0; --hl: #fff1b8; --focus: #0b57d0; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0 auto; max-width: 60rem; padding: 1rem; font: 16px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; color: var(--fg); background: #fff; }
h1 { font-size: 1.4rem; margin: 0; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.meta, .note, .count { color: var(--muted); margin: .25rem 0; }
audio { width: 100%; margin: .75rem 0 0; }
.lane { display: flex; align-items: center; gap: .5rem; margin: .25rem 0; }
.lane-name { flex: 0 0 8rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  border-left: .4rem solid; padding-left: .4rem; }
.track { position: relative; flex: 1; height: 1.75rem; background: #f2f2f2; border-radius: 3px; }
.bar { position: absolute; top: .2rem; bottom: .2rem; min-width: 3px; padding: 0; border: 0;
  border-radius: 2px; cursor: pointer; }
.bar:focus-visible, .line:focus-visible, input:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.playhead { position: absolute; top: 0; bottom: 0; width: 2px; background: var(--fg); pointer-events: none; }
.axis { position: relative; height: 1.4rem; margin-left: 8.5rem; color: var(--muted); font-size: .8rem; }
.axis span { position: absolute; transform: translateX(-50%); }
.axis span:first-child { transform: none; }
.axis span.end { transform: translateX(-100%); }
.talk { list-style: none; padding: 0; margin: 0; }
.talk-row { display: grid; grid-template-columns: 8rem 1fr; gap: .1rem .5rem; margin: .4rem 0; align-items: center; }
.talk-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.talk-bar { height: .9rem; background: #f2f2f2; border-radius: 3px; overflow: hidden; }
.talk-bar span { display: block; height: 100%; }
.talk-figures { grid-column: 2; color: var(--muted); font-size: .9rem; }
.search { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
.search input { flex: 1 1 12rem; font: inherit; padding: .4rem .6rem; border: 1px solid #767676; border-radius: 4px; }
.lines { list-style: none; padding: 0; margin: .5rem 0; }
.line { display: grid; grid-template-columns: 3.5rem 8rem 1fr; gap: .5rem; padding: .35rem .4rem;
  border-bottom: 1px solid var(--line); cursor: pointer; }
.line:hover { background: #f5f5f5; }
.line.current { background: var(--hl); }
.time { color: var(--muted); font-variant-numeric: tabular-nums; }
.who { font-weight: 600; overflow-wrap: anywhere; }
.text { overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: .85rem; margin-top: 2rem; }
@media (max-width: 600px) {
  body { padding: .75rem; }
  .lane-name { flex-basis: 5.5rem; font-size: .9rem; }
  .axis { margin-left: 6rem; }
  .talk-row { grid-template-columns: 1fr; }
  .talk-figures { grid-column: 1; }
  .line { grid-template-columns: auto 1fr; gap: 0 .5rem; }
  .line .text { grid-column: 1 / -1; }
}
"""

_JS = """
'use strict';
(function () {
  const audio = document.getElementById('player');
  const embedded = document.getElementById('embedded-audio');
  if (audio && embedded) {
    const uri = embedded.textContent.trim();
    const comma = uri.indexOf(',');
    const type = uri.slice(5, comma).split(';base64')[0];
    const raw = atob(uri.slice(comma + 1));
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    audio.src = URL.createObjectURL(new Blob([bytes], {type: type}));
  }
  function play(el) {
    if (!audio) return;
    audio.currentTime = parseFloat(el.dataset.start);
    const p = audio.play();
    if (p) p.catch(function () {});
  }
  const lines = Array.from(document.querySelectorAll('.line'));
  for (const el of document.querySelectorAll('.line, .bar')) {
    el.addEventListener('click', function () {
      if (el.classList.contains('line') && String(window.getSelection()).length) return;  // selecting text
      play(el);
    });
    el.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); play(el); }
    });
  }
  const search = document.getElementById('search');
  const count = document.getElementById('count');
  search.addEventListener('input', function () {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const el of lines) {
      const hit = !q || el.textContent.toLowerCase().includes(q);
      el.hidden = !hit;
      if (hit) shown++;
    }
    count.textContent = q ? shown + ' of ' + lines.length + ' lines' : lines.length + ' lines';
  });
  if (!audio) return;
  const heads = Array.from(document.querySelectorAll('.playhead'));
  const duration = parseFloat(document.body.dataset.duration);
  let current = null;
  audio.addEventListener('timeupdate', function () {
    const t = audio.currentTime;
    for (const h of heads) { h.hidden = false; h.style.left = Math.min(100, t / duration * 100) + '%'; }
    let now = null;
    for (const el of lines) { if (parseFloat(el.dataset.start) <= t + 0.05) now = el; else break; }
    if (now && t > parseFloat(now.dataset.end) + 1) now = null;
    if (now !== current) {
      if (current) current.classList.remove('current');
      if (now) now.classList.add('current');
      current = now;
    }
  });
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · whispdiar report</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body data-duration="{duration}">
<header>
<h1>{title}</h1>
<p class="meta">{meta}</p>
{player}
</header>
<main>
<section aria-labelledby="h-timeline">
<h2 id="h-timeline">Timeline</h2>
<div class="timeline" id="timeline">{lanes}<div class="axis" aria-hidden="true">{axis}</div></div>
</section>
<section aria-labelledby="h-talk">
<h2 id="h-talk">Talk time</h2>
<p class="meta">{summary}</p>
<ul class="talk">{talk}</ul>
</section>
<section aria-labelledby="h-transcript">
<h2 id="h-transcript">Transcript</h2>
<div class="search"><input type="search" id="search" placeholder="Search the transcript"
 aria-label="Search the transcript" autocomplete="off">
<span class="count" id="count" aria-live="polite">{count} lines</span></div>
<ol class="lines" id="lines">{lines}</ol>
</section>
</main>
<footer>Made by whispdiar, offline. Click a line or a bar (or press Enter on it) to play from there.</footer>
<script>{js}</script>
</body>
</html>
"""
