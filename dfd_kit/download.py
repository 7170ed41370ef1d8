"""Download and unpack the official DeepFaceDrawing weights into ``Params/``.

The authors publish the pretrained model as two zip archives (about 2.4 GB in
all)::

    Combine.zip   -> Params/Combine/   feature decoders + generator
    AE_whole.zip  -> Params/AE_whole/  component encoders, image decoders, feature banks

:func:`download_official` fetches both from the public Dropbox copies, resuming
an interrupted transfer where it stopped, checks sizes and SHA-256 checksums when
they are known, unpacks each archive *atomically* (into a temporary folder inside
``Params/`` that is renamed into place only once complete and verified) and finally
checks the layout. Run it again after any failure: it picks up where it left off,
and it does nothing when the weights are already in place and match what was
recorded when they were unpacked (``<folder>/.manifest.json``: each archive's size and
SHA-256, each file's size and SHA-256); a damaged folder is downloaded again.

What it trusts and refuses: only ``https://`` URLs (``--allow-http`` for a plain-HTTP
mirror), redirects only over HTTPS and only to the file host's own domains (for
Dropbox: dropbox.com and dropboxusercontent.com), a resumed transfer only while the
server's ETag (or Last-Modified) is unchanged; from an archive, only the expected files,
after checking their declared sizes and compression ratios, refusing encrypted
members, names that clash and paths that escape the folder.

From a shell::

    python -m dfd_kit download-official [--params DIR] [--url-combine URL] [--url-ae URL]

If Dropbox is unreachable, download the two zips by hand, for instance from the
Baidu Netdisk share listed in the official DeepFaceDrawing-Jittor README
(github.com/IGLICT/DeepFaceDrawing-Jittor), and put them at
``Params/.download/Combine.zip`` and ``Params/.download/AE_whole.zip``: the next
run unpacks them without downloading anything (or unzip them yourself so that
``Params/AE_whole/`` and ``Params/Combine/`` hold the files).

Only the standard library and tqdm are used; nothing here imports Jittor.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from .errors import DFDError

__all__ = [
    "DownloadError",
    "ARCHIVES",
    "BAIDU_HINT",
    "official_files",
    "archive_files",
    "missing_files",
    "download_file",
    "unpack_archive",
    "damaged_files",
    "read_manifest",
    "check_url",
    "redirect_refusal",
    "download_official",
    "add_download_parser",
    "main_download",
]


class DownloadError(DFDError, RuntimeError):
    """Fetching, verifying or unpacking the official weights failed.

    The message says what went wrong and what to do about it.
    """


@dataclass(frozen=True)
class Archive:
    """One official archive: its name, where to get it and what is known about it.

    ``size`` (bytes) and ``sha256`` are checked when not ``None``.
    """
    name: str        # "Combine" or "AE_whole": also the folder it unpacks to
    url: str
    size: Optional[int] = None
    sha256: Optional[str] = None

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"


#: The official archives, in the order they are fetched. The public copies are on
#: Dropbox (``?dl=1`` asks for the file itself rather than the preview page).
#:
#: The real sizes and SHA-256 checksums were not available when this was written,
#: so they are ``None``: a download is then checked against the server's
#: Content-Length and, on unpacking, against the zip's own CRC-32s and the
#: expected file list. Fill them in (or pass ``checksums=``) to have them checked.
ARCHIVES: Dict[str, Archive] = {
    "AE_whole": Archive("AE_whole", "https://www.dropbox.com/s/cs4895ci51h8xn3/AE_whole.zip?dl=1"),
    "Combine": Archive("Combine", "https://www.dropbox.com/s/5s5c4zuq6jy0cgc/Combine.zip?dl=1"),
}

#: Where else to get the archives, for error messages.
BAIDU_HINT = ("download Combine.zip and AE_whole.zip by hand (the Dropbox links above, or the "
              "Baidu Netdisk share listed in the official DeepFaceDrawing-Jittor README, "
              "github.com/IGLICT/DeepFaceDrawing-Jittor) and put them in {download_dir}, "
              "then run this again")

#: Seconds to wait before retry k is ``RETRY_WAIT_S * 2**k`` (capped at 30 s).
RETRY_WAIT_S = 2.0
#: Transfer attempts in a row that make no progress before giving up.
DEFAULT_RETRIES = 5

_CHUNK = 1 << 20

#: Hosts a download may be redirected to, by the host it starts from: a redirect goes only
#: to the same site (and its subdomains), or for Dropbox to its download domain.
_SITES = {"dropbox.com": ("dropbox.com", "dropboxusercontent.com"),
          "dropboxusercontent.com": ("dropbox.com", "dropboxusercontent.com")}
#: Limits checked on each archive member *before* it is decompressed: the official files
#: are at most about 600 MB and, being float weights, compress by a few percent at most.
MAX_MEMBER_BYTES = 4 << 30
MAX_ARCHIVE_BYTES = 8 << 30
MAX_COMPRESSION_RATIO = 20
MANIFEST = ".manifest.json"
_SEXES = ("man", "female")
# Official file-name parts in the official order: eye1, eye2, nose, mouth, "" (remainder).
_PARTS = ("eye1", "eye2", "nose", "mouth", "")


# --------------------------------------------------------------------------- layout

def official_files() -> List[str]:
    """Every file of the official ``Params/`` layout, as paths relative to ``Params/``.

    For each component p in (eye1, eye2, nose, mouth, "") -- the remainder is the
    empty string, hence names like ``latest_net_encoder_.pkl`` -- and each sex:
    ``AE_whole/latest_net_encoder_{p}.pkl``, ``AE_whole/latest_net_decoder_{p}_image.pkl``,
    ``AE_whole/{sex}_{p}_feature.bin``, ``Combine/latest_net_DE_{p}.pkl``; plus
    ``Combine/latest_net_G.pkl``. 26 files in all.

    The list is :func:`dfd_kit.loading.official_param_files` when that module can be
    imported (it needs no Jittor), else the same list built here.
    """
    try:
        from .loading import official_param_files
    except ImportError:
        return _builtin_official_files()
    return list(official_param_files())


def _builtin_official_files() -> List[str]:
    files = []
    for p in _PARTS:
        files.append(f"AE_whole/latest_net_encoder_{p}.pkl")
        files.append(f"AE_whole/latest_net_decoder_{p}_image.pkl")
        for sex in _SEXES:
            files.append(f"AE_whole/{sex}_{p}_feature.bin")
    for p in _PARTS:
        files.append(f"Combine/latest_net_DE_{p}.pkl")
    files.append("Combine/latest_net_G.pkl")
    return files


def archive_files(name: str) -> List[str]:
    """The files archive ``name`` ("AE_whole" or "Combine") must provide, relative to its folder."""
    prefix = f"{name}/"
    files = [f[len(prefix):] for f in official_files() if f.startswith(prefix)]
    if not files:
        raise ValueError(f"unknown archive {name!r}; expected one of {', '.join(ARCHIVES)}")
    return files


def missing_files(params_dir) -> List[str]:
    """The official files (relative paths) that are not regular files under ``params_dir``."""
    root = Path(params_dir)
    return [f for f in official_files() if not (root / f).is_file()]


def _check_layout(params_dir: Path) -> None:
    """Check the unpacked layout with :func:`dfd_kit.loading.check_params_dir` (raises
    :class:`~dfd_kit.errors.ParamsError`) if it can be imported, else with a
    file-existence check here (raises :class:`DownloadError`)."""
    try:
        from .loading import check_params_dir  # lazy: keeps this module light
    except ImportError:
        check_params_dir = None
    if check_params_dir is not None:
        check_params_dir(params_dir)
        return
    missing = missing_files(params_dir)
    if missing:
        raise DownloadError(f"{params_dir} is incomplete after unpacking; missing {len(missing)} "
                            f"file(s): {', '.join(missing)}")


# --------------------------------------------------------------------------- download

class _Interrupted(Exception):
    """A transfer stopped early (connection error, truncated body, server hiccup): retry."""


def _say(msg: str) -> None:
    print(msg, flush=True)


def _sha256(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"sha256 {path.name}", disable=not progress,
                                     leave=False) as bar:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _verify_file(path: Path, size: Optional[int], sha256: Optional[str], progress: bool,
                 what: str) -> None:
    """Check a finished download; on a mismatch delete it and raise DownloadError."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        _drop_part(path)
        raise DownloadError(
            f"{what}: {path.name} is {actual_size} bytes, expected {size}. The bad file was "
            f"deleted; run the download again. If this keeps happening the file on the server "
            f"has changed or the link is wrong: " + BAIDU_HINT.format(download_dir=path.parent))
    if sha256 is not None:
        actual = _sha256(path, progress)
        if actual.lower() != sha256.lower():
            _drop_part(path)
            raise DownloadError(
                f"{what}: SHA-256 checksum mismatch for {path.name} (got {actual}, expected "
                f"{sha256.lower()}). The bad file was deleted; run the download again. If this "
                f"keeps happening the file on the server has changed or the link is wrong: "
                + BAIDU_HINT.format(download_dir=path.parent))


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def _site_hosts(host: str) -> tuple:
    """The domains a download that starts at ``host`` may be redirected to."""
    host = (host or "").lower().rstrip(".")
    for site, allowed in _SITES.items():
        if host == site or host.endswith("." + site):
            return allowed
    labels = host.split(".")
    if re.fullmatch(r"[\d.]+|\[.*\]|[^.]*", host):   # an IP address or a bare name: itself only
        return (host,)
    return (".".join(labels[-2:]),)


def _on_hosts(host: str, allowed: Iterable[str]) -> bool:
    host = (host or "").lower().rstrip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)


def check_url(url: str, allow_http: bool = False) -> None:
    """Refuse what is not an ``https://`` URL (``http://`` too, when ``allow_http``)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise DownloadError(f"refusing to download {url} over plain HTTP, where anyone on the way can change "
                            "it: use an https:// URL, or pass --allow-http (allow_http=True) for a mirror you trust")
    raise DownloadError(f"refusing to download {url}: only https:// URLs are allowed")


def redirect_refusal(start_url: str, new_url: str, allow_http: bool = False,
                     hosts: Optional[Iterable[str]] = None) -> Optional[str]:
    """Why a redirect from a download that began at ``start_url`` to ``new_url`` is
    refused, or None when it may be followed: HTTPS only (HTTP too when ``allow_http`` and
    the download began over HTTP: never a step down), and only to ``hosts`` (default: the
    start host's own domains, :func:`_site_hosts`)."""
    new, start = urllib.parse.urlsplit(new_url), urllib.parse.urlsplit(start_url)
    plain_ok = allow_http and start.scheme.lower() == "http"
    if not (new.scheme.lower() == "https" or (plain_ok and new.scheme.lower() == "http")):
        return f"it is not HTTPS ({new_url})"
    allowed = tuple(hosts) if hosts else _site_hosts(start.hostname)
    if not _on_hosts(new.hostname, allowed):
        return f"{new.hostname} is not one of the file host's domains ({', '.join(allowed)})"
    return None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when :func:`redirect_refusal` allows it, and drops the
    Range and If-Range headers when the host changes (the other host's bytes are not
    known to continue ours: the transfer starts from zero there)."""

    def __init__(self, start_url: str, allow_http: bool, hosts: Optional[Iterable[str]]):
        self.start_url, self.allow_http, self.hosts = start_url, allow_http, hosts

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        newurl = urllib.parse.urljoin(req.full_url, newurl)
        why = redirect_refusal(self.start_url, newurl, self.allow_http, self.hosts)
        if why:
            raise DownloadError(f"refusing to follow a redirect from {self.start_url}: {why}. Check the URL, or "
                                "download the archive by hand")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).hostname != urllib.parse.urlsplit(req.full_url).hostname:
            for name in ("Range", "If-range"):
                new.remove_header(name)
        return new


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict:
    try:
        meta = json.loads(_meta_path(part).read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _drop_part(part: Path) -> None:
    for p in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _transfer(url: str, part: Path, size: Optional[int], timeout: float, progress: bool,
              desc: str, allow_http: bool = False, hosts: Optional[Iterable[str]] = None) -> bool:
    """One attempt at fetching the rest of ``url`` into ``part``.

    Returns True once ``part`` holds the whole file. Raises :class:`_Interrupted` for
    anything worth retrying and :class:`DownloadError` for anything that is not. The
    server's ETag and Last-Modified are kept beside ``part`` (``.part.json``); a resume
    sends them as If-Range, so a file changed on the server comes back whole (200) and
    is started over, and a 206 with another ETag is refused: never spliced.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:          # cannot be ours: start over
        _drop_part(part)
        offset = 0
    if size is not None and offset == size:         # finished before; the checks follow
        return True
    meta = _read_meta(part) if offset else {}
    headers = {"User-Agent": "dfd_kit-downloader/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") if not str(meta.get("etag", "")).startswith("W/") else None
        validator = validator or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(_Redirects(url, allow_http, hosts))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: either we already have everything or the part is junk.
            m = re.search(r"/(\d+)", e.headers.get("Content-Range", "") or "")
            e.close()
            if m and int(m.group(1)) == offset:
                return True
            _drop_part(part)
            raise _Interrupted(f"server refused to resume at byte {offset}; starting over")
        e.close()
        if e.code in (408, 429) or e.code >= 500:
            raise _Interrupted(f"HTTP {e.code} {e.reason}")
        raise DownloadError(f"{desc}: the server answered HTTP {e.code} {e.reason} for {url}. "
                            f"Check the URL, or " + BAIDU_HINT.format(download_dir=part.parent))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
            socket.timeout, TimeoutError, OSError) as e:
        raise _Interrupted(f"could not connect: {getattr(e, 'reason', e)}")

    with response:
        status = response.status
        ctype = (response.headers.get("Content-Type") or "").lower()
        if ctype.startswith("text/html"):
            raise DownloadError(
                f"{desc}: {url} returned a web page instead of the zip archive (the link may "
                f"have expired or need '?dl=1'). " + BAIDU_HINT.format(download_dir=part.parent))
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        if offset and status == 206:
            m = _CONTENT_RANGE.search(response.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                _drop_part(part)
                raise _Interrupted("server resumed at the wrong place; starting over")
            total = int(m.group(3)) if m.group(3) != "*" else (
                offset + length if length is not None else None)
            changed = ((meta.get("etag") and etag and etag != meta["etag"])
                       or (meta.get("total") and total and total != meta["total"]))
            if changed:
                _drop_part(part)
                raise _Interrupted("the file on the server changed since the transfer began; starting over")
            mode = "ab"
        elif status in (200, 206):
            # A plain 200 (also the answer of a server without Range support): from zero.
            offset, mode = 0, "wb"
            total = length
        else:
            raise _Interrupted(f"unexpected HTTP status {status}")
        if total is None:
            total = size
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{desc}: the server reports {total} bytes for {url}, but the "
                                f"official archive is {size} bytes. Check the URL, or "
                                + BAIDU_HINT.format(download_dir=part.parent))
        _check_space(part.parent, (total - offset) if total is not None else None, desc)
        if mode == "wb" or not meta:   # what a later resume must find unchanged
            _meta_path(part).write_text(json.dumps({"url": url, "etag": etag, "last_modified": modified,
                                                    "total": total}))

        received = offset
        try:
            out = open(part, mode)
        except OSError as e:
            raise DownloadError(f"{desc}: could not write {part}: {e}") from None
        with out, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=desc, disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as e:     # resets, timeouts, TLS
                    raise _Interrupted(f"transfer interrupted after {received} bytes: {e!r}") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:    # disk full, permissions: not worth retrying
                    raise DownloadError(f"{desc}: could not write {part}: {e}") from None
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        # http.client returns b"" when the connection closes early: that is an
        # interruption, not the end of the file.
        raise _Interrupted(f"transfer cut short at {received} of {total} bytes")
    if total is not None and received > total:
        _drop_part(part)
        raise _Interrupted(f"received {received} bytes, more than the announced {total}; starting over")
    return True


def _check_space(folder: Path, needed: Optional[int], what: str) -> None:
    if not needed:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"{what}: not enough disk space in {folder}: need "
                            f"{needed / 2**30:.2f} GiB more, {free / 2**30:.2f} GiB free")


def download_file(url: str, dest, *, size: Optional[int] = None, sha256: Optional[str] = None,
                  progress: bool = True, timeout: float = 60, retries: int = DEFAULT_RETRIES,
                  allow_http: bool = False, hosts: Optional[Iterable[str]] = None) -> Path:
    """Download ``url`` to ``dest``, resuming a previous attempt, and return ``dest``.

    The bytes go to ``dest + ".part"``; a restart asks the server for the rest with
    ``Range: bytes=N-`` and appends when it answers 206, or starts from zero when it
    answers 200 (no Range support). Connection errors and transfers shorter than the
    announced length are retried, with growing waits, up to ``retries`` times in a
    row without progress. The finished file is checked against ``size`` and
    ``sha256`` when given (a mismatch deletes it and raises :class:`DownloadError`)
    and only then renamed to ``dest``. An existing ``dest`` is checked, not fetched.

    Only ``https://`` URLs unless ``allow_http``; redirects as :func:`redirect_refusal`
    says (``hosts``: the domains allowed, default the start URL's own); a resume only
    while the server's ETag / Last-Modified are unchanged (see :func:`_transfer`).
    """
    dest = Path(dest)
    desc = dest.name
    check_url(url, allow_http)
    if dest.exists():
        _verify_file(dest, size, sha256, progress, desc)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, size, timeout, progress, desc, allow_http, hosts)
            break
        except _Interrupted as e:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"{desc}: download from {url} keeps failing ({e}); gave up after {retries} "
                    f"retries. What was received is kept in {part}: run this again to resume, "
                    f"or " + BAIDU_HINT.format(download_dir=dest.parent)) from None
            wait = min(30.0, RETRY_WAIT_S * 2 ** max(failures - 1, 0))
            _say(f"{desc}: {e}; retrying" + (f" in {wait:.0f} s" if wait >= 1 else ""))
            if wait > 0:
                time.sleep(wait)
    if not part.exists():        # zero-byte file with no body at all
        part.touch()
    _verify_file(part, size, sha256, progress, desc)
    os.replace(part, dest)
    _drop_part(part)   # its .json
    return dest


# --------------------------------------------------------------------------- unpack

_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _is_junk(parts: Sequence[str]) -> bool:
    return "__MACOSX" in parts or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._")


class _Unsafe(Exception):
    """An archive member that must not be unpacked; becomes a DownloadError via _corrupt."""


def _safe_parts(name: str) -> tuple:
    """Split a member name into path parts, refusing anything that could escape (zip-slip)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise _Unsafe(f"it holds a member with an absolute path ({name!r}); refusing to unpack it")
    parts = tuple(p for p in PurePosixPath(norm).parts if p not in ("", "."))
    if ".." in parts:
        raise _Unsafe(f"it holds a member that points outside its folder ({name!r}); refusing to unpack it")
    return parts


def _check_member(info: zipfile.ZipInfo) -> None:
    """What is checked before a member is decompressed: not encrypted, a known compression,
    a declared size within :data:`MAX_MEMBER_BYTES` and a ratio within
    :data:`MAX_COMPRESSION_RATIO` (a zip bomb's is in the thousands)."""
    if info.flag_bits & 0x1:
        raise _Unsafe(f"member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Unsafe(f"member {info.filename!r} uses compression method {info.compress_type}, not stored or deflate")
    if info.file_size > MAX_MEMBER_BYTES:
        raise _Unsafe(f"member {info.filename!r} claims {info.file_size} bytes, more than any official file")
    if info.file_size > (1 << 20) and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise _Unsafe(f"member {info.filename!r} would expand {info.file_size / max(info.compress_size, 1):.0f}"
                      f" times, far more than weights compress (at most {MAX_COMPRESSION_RATIO})")


class _Hashing:
    """A file wrapper that hashes what is written through it."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


def _find_root(members: Dict[tuple, zipfile.ZipInfo], expected: List[str]):
    """The folder inside the zip that holds all ``expected`` files: a tuple of path parts.

    Returns ``(root, missing)``: the best candidate and what it lacks (empty when complete).
    """
    expected_parts = [tuple(e.split("/")) for e in expected]
    first = expected_parts[0]
    candidates = {parts[:-len(first)] for parts in members
                  if len(parts) >= len(first) and parts[-len(first):] == first}
    if not candidates:
        # No anchor: look for any expected file to report the most helpful list.
        for e in expected_parts:
            candidates |= {parts[:-len(e)] for parts in members
                           if len(parts) >= len(e) and parts[-len(e):] == e}
    candidates = sorted(candidates, key=len) or [()]
    best, best_missing = None, None
    for root in candidates:
        missing = [e for e, ep in zip(expected, expected_parts) if root + ep not in members]
        if best_missing is None or len(missing) < len(best_missing):
            best, best_missing = root, missing
        if not missing:
            break
    return best, best_missing


def _corrupt(archive: Path, why: str, delete: bool) -> DownloadError:
    deleted = False
    if delete:
        try:
            archive.unlink()
            deleted = True
        except OSError:
            pass
    if deleted:
        todo = (f"The archive was deleted; run this again to download it anew (or "
                + BAIDU_HINT.format(download_dir=archive.parent) + ").")
    else:
        todo = f"Delete {archive} and run this again to download it anew."
    return DownloadError(f"{archive.name} is not a usable archive: {why}. Nothing was installed. "
                         + todo)


def unpack_archive(archive, params_dir, name: str, *, delete_bad: bool = True,
                   progress: bool = True, record: Optional[dict] = None) -> Path:
    """Unpack the official archive ``name`` ("AE_whole" or "Combine") into ``params_dir/name``.

    Works whether the zip holds a top folder (``AE_whole/...``, even ``Params/AE_whole/...``)
    or the files themselves, and ignores ``__MACOSX/`` and similar junk. Only the expected
    files are extracted, each after :func:`_check_member` (size, compression ratio, no
    encryption), into ``params_dir/.unpack-XXXX`` first; their CRC-32s are checked as they
    are written, then the folder is renamed into place in one step, so
    ``params_dir/name`` is never seen half-written. It holds ``.manifest.json``: each
    file's size and SHA-256, and ``record`` (the archive's). An existing incomplete
    ``params_dir/name`` is moved aside to ``name.incomplete`` (never deleted). A bad
    archive (not a zip, missing files, a damaged, encrypted or clashing member, a path
    that escapes) raises :class:`DownloadError` and, when ``delete_bad``, is deleted so
    the next run downloads it again.
    """
    archive, params_dir = Path(archive), Path(params_dir)
    expected = archive_files(name)
    params_dir.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise _corrupt(archive, f"not a valid zip file ({e})", delete_bad) from None
    with zf:
        members: Dict[tuple, zipfile.ZipInfo] = {}
        try:
            for info in zf.infolist():
                parts = _safe_parts(info.filename)
                if not parts or info.is_dir() or _is_junk(parts):
                    continue
                if parts in members:
                    raise _Unsafe(f"two members are both named {'/'.join(parts)!r}")
                members[parts] = info
        except _Unsafe as e:
            raise _corrupt(archive, str(e), delete_bad) from None
        root, missing = _find_root(members, expected)
        if missing:
            shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise _corrupt(archive, f"it lacks expected files of {name}/: {shown}", delete_bad)
        chosen = {e: members[root + tuple(e.split("/"))] for e in expected}
        by_lower_name: Dict[str, int] = {}
        for parts in members:
            if parts[:len(root)] == root:
                key = "/".join(parts[len(root):]).lower()
                by_lower_name[key] = by_lower_name.get(key, 0) + 1
        try:
            for rel, info in chosen.items():
                _check_member(info)
                if by_lower_name[rel.lower()] > 1:   # one file on a case-insensitive disk
                    raise _Unsafe(f"members named {rel!r} in different cases clash")
        except _Unsafe as e:
            raise _corrupt(archive, str(e), delete_bad) from None
        total = sum(i.file_size for i in chosen.values())
        if total > MAX_ARCHIVE_BYTES:
            raise _corrupt(archive, f"its files would take {total / 2**30:.1f} GiB, more than the official ones",
                           delete_bad)
        _check_space(params_dir, total, f"unpacking {archive.name}")
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=params_dir))
        try:
            staged = tmp / name
            staged.mkdir()
            files = {}
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"unpack {archive.name}", disable=not progress, leave=False) as bar:
                for rel, info in sorted(chosen.items()):
                    target = staged.joinpath(*rel.split("/"))
                    if staged.resolve() not in target.resolve().parents:    # belt and braces
                        raise _corrupt(archive, f"member {info.filename!r} escapes its folder", delete_bad)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        with zf.open(info) as src, open(target, "wb") as dst:
                            out = _Hashing(dst)
                            shutil.copyfileobj(src, out, _CHUNK)   # the CRC-32 is checked at the end
                    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError,
                            zlib.error) as e:
                        raise _corrupt(archive, f"member {info.filename!r} is damaged ({e})", delete_bad) from None
                    if out.size != info.file_size:
                        raise _corrupt(archive, f"member {info.filename!r} holds {out.size} bytes, not the "
                                                f"{info.file_size} it declares", delete_bad)
                    files[rel] = {"size": out.size, "sha256": out.sha.hexdigest()}
                    bar.update(info.file_size)
            (staged / MANIFEST).write_text(json.dumps({"archive": record or {}, "files": files}, indent=1))
            final = params_dir / name
            if final.exists() or final.is_symlink():
                aside = _free_name(params_dir / f"{name}.incomplete")
                os.replace(final, aside)
                _say(f"moved the incomplete {final} aside to {aside}")
            os.replace(staged, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_manifest(folder) -> Optional[dict]:
    """An unpacked folder's ``.manifest.json`` (None if absent or unreadable)."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text())
        return m if isinstance(m, dict) and isinstance(m.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def damaged_files(params_dir, name: str, progress: bool = False) -> List[str]:
    """The files of ``params_dir/name`` that are missing or not what was unpacked: their
    size and SHA-256 against ``.manifest.json``. Without a manifest (a folder unpacked by
    hand) what can be checked is: a non-empty file, and the checksum that jittor 1.3
    appends to its checkpoints (the SHA-1 of the pickle, then ``HCAJSLHD``)."""
    folder = Path(params_dir) / name
    manifest = read_manifest(folder) or {"files": {}}
    bad = []
    for rel in archive_files(name):
        path = folder / rel
        if not path.is_file():
            bad.append(f"{name}/{rel}")
            continue
        known = manifest["files"].get(rel)
        if known is not None:
            ok = path.stat().st_size == known.get("size") and _sha256(path, progress) == known.get("sha256")
        else:
            ok = path.stat().st_size > 0 and _jittor_trailer_ok(path)
        if not ok:
            bad.append(f"{name}/{rel}")
    return bad


def _jittor_trailer_ok(path: Path) -> bool:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - 28, 0))
        tail = f.read()
        if not (tail.endswith(b"HCAJSLHD") and size > 28):
            return True   # jittor 1.1's plain pickle carries no checksum
        f.seek(0)
        sha, left = hashlib.sha1(), size - 28
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                return False
            sha.update(chunk)
            left -= len(chunk)
    return sha.digest() == tail[:20]


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10000):
        candidate = path.with_name(f"{path.name}.{i}")
        if not candidate.exists():
            return candidate
    raise DownloadError(f"too many old copies next to {path}; clean them up")


@contextlib.contextmanager
def _exclusive(params_dir: Path):
    """Hold an advisory lock on ``params_dir`` (the folder itself, so no lock file is left
    behind; released by the OS even if the process dies). A no-op where unsupported."""
    try:
        import fcntl
        fd = os.open(params_dir, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"another download into {params_dir} is running (in another "
                                f"process or notebook); wait for it to finish, then run this "
                                f"again.") from None
        except OSError:
            pass                                   # no locking on this filesystem
        yield
    finally:
        os.close(fd)


def _remove_stale_unpacks(params_dir: Path) -> None:
    """Delete the temporary folders left by an unpack that crashed mid-way."""
    for stale in params_dir.glob(".unpack-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------------------- main entry

def _lookup(table: Optional[Mapping[str, object]], name: str):
    if not table:
        return None
    for key in (name, f"{name}.zip", name.lower(), {"AE_whole": "ae", "Combine": "combine"}[name]):
        if key in table and table[key] is not None:
            return table[key]
    return None


def download_official(params_dir="Params", urls: Optional[Mapping[str, str]] = None,
                      checksums: Optional[Mapping[str, str]] = None, progress: bool = True,
                      timeout: float = 60, *, sizes: Optional[Mapping[str, int]] = None,
                      retries: int = DEFAULT_RETRIES, keep_archives: bool = False,
                      allow_http: bool = False) -> Path:
    """Fetch and unpack the official pretrained weights into ``params_dir``; return its path.

    ``params_dir`` ends up holding ``AE_whole/`` and ``Combine/`` as listed by
    :func:`official_files`. Safe to run again at any point: archives whose folder is
    already complete and intact (:func:`damaged_files`) are skipped (nothing at all
    happens when both are), a damaged folder is downloaded again and moved aside, a
    partial download resumes, and an unpack that crashed leaves only a ``.unpack-*``
    folder, which is deleted.

    Args:
        params_dir: where ``AE_whole/`` and ``Combine/`` go. Downloads are kept in
            ``params_dir/.download/`` until unpacked; a zip you put there yourself
            (e.g. from the Baidu share) is used instead of downloading.
        urls: override the download URL per archive, ``{"Combine": url, "AE_whole": url}``
            (keys may also be ``"Combine.zip"``, ``"combine"``, ``"ae"``, ...). Only
            ``https://`` unless ``allow_http``.
        checksums: SHA-256 hex digests per archive, same keys; default :data:`ARCHIVES`
            (unknown there), else what the folder's manifest recorded at the first
            successful download.
        progress: show tqdm progress bars.
        timeout: socket timeout in seconds for each connection/read.
        sizes: expected archive sizes in bytes, same keys (default :data:`ARCHIVES`,
            else the manifest's record).
        retries: attempts in a row without progress before giving up on a download.
        keep_archives: keep the zips in ``.download/`` after unpacking (default: delete
            them to free about 2.4 GB).
        allow_http: accept ``http://`` URLs (a mirror you trust; the archive is then
            only as safe as the network on the way).

    Raises:
        DownloadError: on a network failure that retries could not fix, an HTTP error, a
            refused URL or redirect, a size/checksum mismatch (the bad file is deleted), a
            corrupt or unsafe archive (deleted; no partial ``AE_whole/``/``Combine/`` is
            left), or not enough disk space.
    """
    params_dir = Path(params_dir)
    urls = {name: _lookup(urls, name) or known.url for name, known in ARCHIVES.items()}
    for url in urls.values():
        check_url(url, allow_http)
    damaged = {}
    if not missing_files(params_dir):
        damaged = {name: damaged_files(params_dir, name, progress) for name in ARCHIVES}
        bad = [f for files in damaged.values() for f in files]
        if not bad:
            _check_layout(params_dir)
            _say(f"The official weights are already complete in {params_dir} and match what was unpacked; "
                 "nothing to do.")
            return params_dir
        _say(f"{len(bad)} file(s) in {params_dir} are damaged ({', '.join(bad[:4])}"
             f"{', ...' if len(bad) > 4 else ''}); downloading their archive again.")
    params_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(params_dir):
        _remove_stale_unpacks(params_dir)
        download_dir = params_dir / ".download"

        for name, known in ARCHIVES.items():
            folder = params_dir / name
            if not (damaged[name] if name in damaged else damaged_files(params_dir, name, progress)):
                _say(f"{folder} is already complete; skipping {known.filename}.")
                continue
            recorded = (read_manifest(folder) or {}).get("archive") or {}
            sha = _lookup(checksums, name) or known.sha256
            size = _lookup(sizes, name) or known.size
            zip_path = download_dir / known.filename
            _say(f"{'Checking' if zip_path.exists() else 'Downloading'} {known.filename} "
                 f"-> {zip_path}")
            download_file(urls[name], zip_path, size=size, sha256=sha, progress=progress,
                          timeout=timeout, retries=retries, allow_http=allow_http)
            record = {"size": zip_path.stat().st_size, "sha256": sha or _sha256(zip_path, progress),
                      "url": urls[name]}
            if recorded and (record["size"], record["sha256"]) != (recorded.get("size"), recorded.get("sha256")):
                zip_path.unlink()
                raise DownloadError(
                    f"{known.filename} is not the archive recorded when {folder} was first unpacked "
                    f"({recorded.get('size')} bytes, SHA-256 {recorded.get('sha256')}; now {record['size']} "
                    f"bytes, {record['sha256']}), so the file on the server has changed. It was deleted. "
                    f"If the authors published a new version, delete {folder} and run this again.")
            unpack_archive(zip_path, params_dir, name, delete_bad=True, progress=progress, record=record)
            _say(f"Unpacked {known.filename} into {folder}")
            if not keep_archives:
                zip_path.unlink()
        try:
            download_dir.rmdir()      # only when empty
        except OSError:
            pass
    _check_layout(params_dir)
    _say(f"The official weights are ready in {params_dir}.")
    return params_dir


def add_download_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``download-official`` sub-command to an argparse ``subparsers`` object.

    The parser's ``func`` default is :func:`run_download_args`, so a CLI can do
    ``args = parser.parse_args(); return args.func(args)``.
    """
    p = subparsers.add_parser(
        "download-official",
        help="download and unpack the official pretrained weights (about 2.4 GB)",
        description=__doc__.split("\n\n")[0],
    )
    _add_arguments(p)
    p.set_defaults(func=run_download_args)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="Params", metavar="DIR",
                   help="where AE_whole/ and Combine/ go (default: Params)")
    p.add_argument("--url-combine", default=None, metavar="URL", help="URL of Combine.zip")
    p.add_argument("--url-ae", default=None, metavar="URL", help="URL of AE_whole.zip")
    p.add_argument("--sha256-combine", default=None, metavar="HEX", help="expected SHA-256 of Combine.zip")
    p.add_argument("--sha256-ae", default=None, metavar="HEX", help="expected SHA-256 of AE_whole.zip")
    p.add_argument("--allow-http", action="store_true",
                   help="accept http:// URLs (by default only https:// is used)")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep the zips in DIR/.download/ after unpacking")
    p.add_argument("--timeout", type=float, default=60, help="network timeout in seconds (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_download_args(args: argparse.Namespace) -> int:
    """Run the download from parsed arguments; return an exit code (0 ok, 1 failed)."""
    try:
        download_official(
            args.params,
            urls={"Combine": args.url_combine, "AE_whole": args.url_ae},
            checksums={"Combine": args.sha256_combine, "AE_whole": args.sha256_ae},
            progress=not args.no_progress,
            timeout=args.timeout,
            keep_archives=args.keep_archives,
            allow_http=args.allow_http,
        )
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main_download(argv: Optional[Sequence[str]] = None) -> int:
    """``download-official`` as a stand-alone command: parse ``argv`` (the arguments after
    the sub-command name; default ``sys.argv[1:]``) and run; return the exit code."""
    p = argparse.ArgumentParser(prog="python -m dfd_kit download-official",
                                description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return run_download_args(p.parse_args(argv))


if __name__ == "__main__":   # python -m dfd_kit.download [...]
    sys.exit(main_download())
