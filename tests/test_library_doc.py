"""docs/library.md's examples run as written (with tiny.en and a test recording)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "library.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_doc_has_examples() -> None:
    assert len(examples()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(3))
def test_library_example_runs(index: int, data_dir: Path, whisper_tiny_en_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code = examples()[index]
    code = code.replace('"meeting.wav"', repr(str(data_dir / "diar_sample.flac")))
    code = code.replace('model="base"', f"model={str(whisper_tiny_en_path)!r}")
    code = code.replace('whisper="base"', f"whisper={str(whisper_tiny_en_path)!r}")
    exec(compile(code, f"docs/library.md example {index + 1}", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip(), "the example printed nothing"
    if index == 2:
        assert {ln.split()[-1] for ln in out.splitlines()} == {"SPEAKER_00", "SPEAKER_01"}
