"""Get the MNIST files from the first source that serves a verified copy.

Sources, in order: the local raw folder, the mirror named by an environment variable (a directory, a
file:// URL or an http(s):// base URL), then the public mirrors. A file is accepted only when the
sha256 of its decompressed payload matches; it is written to a temporary file and renamed into place
only after that check, so the raw folder never holds a partial or unverified file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data.idx import IDXFormatError, read_payload

log = logging.getLogger(__name__)

SOURCES_FILE = "sources.json"  # where each cached raw file originally came from
_CHUNK = 1 << 16


class DownloadError(PipelineError):
    """No source produced a verified copy of a file."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    source: str  # the mirror or URL the bytes came from
    cached: bool  # True when the verified copy was already in the raw folder


@dataclass(frozen=True)
class FetchSettings:
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0  # seconds before the 2nd attempt, doubled each further attempt


class _SourceError(Exception):
    """This source failed for this file; the message says why."""


def payload_sha256(path: Path) -> str:
    return hashlib.sha256(read_payload(path)).hexdigest()


def _verify(path: Path, sha256: str) -> None:
    try:
        actual = payload_sha256(path)
    except IDXFormatError as exc:
        raise _SourceError(str(exc)) from exc
    if actual != sha256:
        raise _SourceError(f"payload sha256 {actual[:12]}... does not match the expected {sha256[:12]}...")


def _as_local_dir(base: str) -> Path | None:
    """A local directory for a path or file:// URL, None for an http(s) URL."""
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # plain path (one letter: a Windows drive)
        return Path(base).expanduser().resolve()
    raise DownloadError(f"unsupported mirror {base!r}: use a directory, a file:// URL or an http(s):// URL")


def _retriable(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException))


def _download(url: str, dest: Path, filename: str, settings: FetchSettings) -> None:
    attempts = max(1, settings.retries)
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=settings.timeout) as response, open(dest, "wb") as out:
                total = response.headers.get("Content-Length")
                total = int(total) if total is not None else None
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=None, leave=False) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if total is not None and received != total:
                    raise http.client.IncompleteRead(b"", total - received)
            return
        except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
            reason = f"{type(exc).__name__}: {exc}"
            if not _retriable(exc):
                raise _SourceError(reason) from exc
            if attempt == attempts:
                raise _SourceError(f"{reason} (after {attempts} attempts)") from exc
            delay = settings.backoff * 2 ** (attempt - 1)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1fs", url, attempt, attempts, reason, delay)
            time.sleep(delay)


def _location(base: str, filename: str) -> str:
    """Where `filename` lies at one source: a local path or a URL."""
    local = _as_local_dir(base)
    return str(local / filename) if local is not None else base.rstrip("/") + "/" + filename


def _fetch_from(location: str, filename: str, dest: Path, settings: FetchSettings) -> None:
    """Copy or download one source's copy of `filename` into `dest`."""
    if location.startswith(("http://", "https://")):
        _download(location, dest, filename, settings)
        return
    if not Path(location).is_file():
        raise _SourceError("no such file")
    shutil.copyfile(location, dest)


def _read_sources(raw_dir: Path) -> dict[str, str]:
    try:
        return json.loads((raw_dir / SOURCES_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _record_source(raw_dir: Path, filename: str, source: str) -> None:
    sources = _read_sources(raw_dir)
    sources[filename] = source
    tmp = raw_dir / f".{SOURCES_FILE}.tmp"
    tmp.write_text(json.dumps(sources, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, raw_dir / SOURCES_FILE)


def fetch_file(
    filename: str,
    sha256: str,
    raw_dir: Path,
    mirrors: list[str],
    settings: FetchSettings = FetchSettings(),
) -> Fetched:
    """A verified copy of `filename` in `raw_dir`, from the first source that has one."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    target = raw_dir / filename
    failures: list[str] = []

    if target.is_file():
        try:
            _verify(target, sha256)
            return Fetched(target, _read_sources(raw_dir).get(filename, str(target)), cached=True)
        except _SourceError as exc:
            log.warning("%s: cached copy rejected (%s); fetching it again", target, exc)
            failures.append(f"{target} (cached): {exc}")
            target.unlink()
    else:
        failures.append(f"{target} (cached): not present")

    for base in mirrors:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=raw_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        source = _location(base, filename)
        try:
            _fetch_from(source, filename, tmp, settings)
            _verify(tmp, sha256)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is an ordinary file
            os.replace(tmp, target)
        except (_SourceError, OSError) as exc:
            reason = str(exc) if isinstance(exc, _SourceError) else f"{type(exc).__name__}: {exc}"
            log.warning("%s rejected: %s", source, reason)
            failures.append(f"{source}: {reason}")
            continue
        finally:
            tmp.unlink(missing_ok=True)  # gone already after a successful rename
        _record_source(raw_dir, filename, source)
        log.info("%s: verified copy from %s", filename, source)
        return Fetched(target, source, cached=False)

    raise DownloadError(
        f"could not get a verified copy of {filename}; sources tried:\n" + "\n".join(f"  - {f}" for f in failures)
    )
