"""dfd_kit.download: fetching, resuming, verifying and unpacking the official weights.

Everything runs against a small HTTP server on 127.0.0.1 started here, serving tiny
zips with the official file names; no internet, no Jittor.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dfd_kit import download as dl
from dfd_kit.download import DownloadError

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def _fast_and_jittor_free(monkeypatch):
    """No waiting between retries; and the layout check must not drag Jittor in."""
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    if "jittor" not in sys.modules:
        monkeypatch.setitem(sys.modules, "jittor", None)   # `import jittor` -> ImportError


def member_bytes(rel: str) -> bytes:
    """Deterministic dummy contents (incompressible, a few KB) for one official file."""
    seed = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16)
    return random.Random(seed).randbytes(3000)


def make_zip(name: str, prefix: str = "{name}/", junk: bool = False, skip=(), extra=None,
             compression=zipfile.ZIP_STORED) -> bytes:
    """A zip of archive ``name`` ('AE_whole'/'Combine') with members under ``prefix``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        if prefix:
            zf.writestr(prefix.format(name=name), b"")        # directory entry, like real zips
        for rel in dl.archive_files(name):
            if rel in skip:
                continue
            zf.writestr(prefix.format(name=name) + rel, member_bytes(f"{name}/{rel}"))
            if junk:
                zf.writestr(f"__MACOSX/{prefix.format(name=name)}._{rel}", b"\x00\x05\x16\x07junk")
        if junk:
            zf.writestr(".DS_Store", b"junk")
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return buf.getvalue()


def etag(data: bytes) -> str:
    return f'"{sha(data)[:16]}"'


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; supports ``Range: bytes=N-`` unless told not to, and can
    cut a transfer short after N bytes (``server.cuts[path] = [N, ...]``, one per request).
    Sends an ETag and honours If-Range (unless ``server.ignore_if_range``); redirects
    ``server.redirects[path]`` to that URL. ``server.headers_seen`` keeps each request's headers."""

    def do_GET(self):  # noqa: N802
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.log.append((path, rng))
        srv.headers_seen.append(dict(self.headers))
        if path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if srv.fail_next > 0:
            srv.fail_next -= 1
            self.send_error(503, "try later")
            return
        data = srv.files.get(path)
        if data is None:
            self.send_error(404, "not found")
            return
        start, status = 0, 200
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range != etag(data) and not srv.ignore_if_range:
            rng = None                   # the file changed: the whole of it, as HTTP says
        if rng and srv.range_support:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", srv.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag(data))
        if srv.range_support:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cuts = srv.cuts.get(path)
        if cuts:
            self.wfile.write(body[:cuts.pop(0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.cuts, srv.log, srv.redirects, srv.headers_seen = {}, {}, [], {}, []
    srv.range_support, srv.fail_next, srv.content_type = True, 0, "application/zip"
    srv.ignore_if_range = False
    srv.url = lambda path, host="127.0.0.1": f"http://{host}:{srv.server_address[1]}{path}?dl=1"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def official(server):
    """The server holding both official archives; returns the ``urls`` mapping."""
    server.files["/Combine.zip"] = make_zip("Combine")
    server.files["/AE_whole.zip"] = make_zip("AE_whole")
    return {"Combine": server.url("/Combine.zip"), "AE_whole": server.url("/AE_whole.zip")}


def assert_complete_layout(params: Path):
    assert dl.missing_files(params) == []
    for rel in dl.official_files():
        assert (params / rel).read_bytes() == member_bytes(rel), rel


def assert_nothing_installed(params: Path, name: str):
    assert not (params / name).exists()
    assert not list(params.glob(".unpack-*"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- layout

def test_official_files_list_the_26_files_with_empty_remainder_names():
    files = dl.official_files()
    assert len(files) == len(set(files)) == 26
    for name in ("AE_whole/latest_net_encoder_.pkl", "AE_whole/latest_net_decoder__image.pkl",
                 "AE_whole/man__feature.bin", "AE_whole/female_eye1_feature.bin",
                 "AE_whole/latest_net_decoder_mouth_image.pkl", "Combine/latest_net_DE_.pkl",
                 "Combine/latest_net_DE_eye2.pkl", "Combine/latest_net_G.pkl"):
        assert name in files


def test_official_files_built_in_list_matches_the_loader_list():
    loading = pytest.importorskip("dfd_kit.loading")
    assert sorted(dl._builtin_official_files()) == sorted(loading.official_param_files())


def test_the_download_module_itself_does_not_import_jittor():
    # dfd_kit/__init__.py is bypassed (a bare package object) so that only what
    # download.py and its lazy helpers import is seen.
    code = ("import sys, types; pkg = types.ModuleType('dfd_kit'); pkg.__path__ = ['dfd_kit']; "
            "sys.modules['dfd_kit'] = pkg; import dfd_kit.download as d; "
            "d.official_files(); import dfd_kit.loading; "
            "assert 'jittor' not in sys.modules, 'jittor imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --------------------------------------------------------------------------- download

def test_download_unpacks_both_archives_into_the_official_layout(tmp_path, official):
    params = tmp_path / "Params"
    assert dl.download_official(params, urls=official, progress=False, allow_http=True) == params
    assert_complete_layout(params)
    assert not list(params.glob(".unpack-*"))


def test_downloaded_archives_are_deleted_after_unpacking_unless_kept(tmp_path, official, server):
    dl.download_official(tmp_path / "a", urls=official, progress=False, allow_http=True)
    assert not (tmp_path / "a" / ".download").exists()
    dl.download_official(tmp_path / "b", urls=official, progress=False, allow_http=True, keep_archives=True)
    assert (tmp_path / "b" / ".download" / "Combine.zip").read_bytes() == server.files["/Combine.zip"]


def test_interrupted_transfer_resumes_with_a_range_request_and_is_byte_identical(
        tmp_path, official, server):
    data = server.files["/Combine.zip"]
    server.cuts["/Combine.zip"] = [len(data) // 3]
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True, keep_archives=True)
    combine = [r for p, r in server.log if p == "/Combine.zip"]
    assert combine == [None, f"bytes={len(data) // 3}-"]
    assert (params / ".download" / "Combine.zip").read_bytes() == data
    assert_complete_layout(params)


def test_partial_file_left_by_a_previous_run_is_resumed(tmp_path, server):
    data = make_zip("Combine")
    server.files["/Combine.zip"] = data
    dest = tmp_path / "Combine.zip"
    (tmp_path / "Combine.zip.part").write_bytes(data[:1000])
    dl.download_file(server.url("/Combine.zip"), dest, progress=False, allow_http=True)
    assert server.log == [("/Combine.zip", "bytes=1000-")]
    assert dest.read_bytes() == data
    assert not (tmp_path / "Combine.zip.part").exists()


def test_server_without_range_support_restarts_from_zero(tmp_path, server):
    data = make_zip("Combine")
    server.files["/Combine.zip"] = data
    server.range_support = False
    dest = tmp_path / "Combine.zip"
    (tmp_path / "Combine.zip.part").write_bytes(b"stale bytes that must not survive")
    dl.download_file(server.url("/Combine.zip"), dest, progress=False, allow_http=True)
    assert server.log[0][1] is not None            # it did ask to resume...
    assert dest.read_bytes() == data               # ...and got (and kept) the whole file


def test_transfer_shorter_than_content_length_is_an_interruption_not_success(tmp_path, server):
    data = make_zip("Combine")
    server.files["/Combine.zip"] = data
    server.cuts["/Combine.zip"] = [500, 0]     # then a retry that brings nothing
    dest = tmp_path / "Combine.zip"
    with pytest.raises(DownloadError, match="run this again to resume"):
        dl.download_file(server.url("/Combine.zip"), dest, progress=False, allow_http=True, retries=0)
    assert not dest.exists()
    assert (tmp_path / "Combine.zip.part").read_bytes() == data[:500]


def test_repeated_cuts_are_retried_until_complete(tmp_path, server):
    data = make_zip("AE_whole")
    server.files["/AE_whole.zip"] = data
    server.cuts["/AE_whole.zip"] = [100, 5000, 20000]
    dest = tmp_path / "AE_whole.zip"
    dl.download_file(server.url("/AE_whole.zip"), dest, progress=False, allow_http=True, retries=1)
    assert dest.read_bytes() == data
    assert [r for _, r in server.log] == [None, "bytes=100-", "bytes=5100-", "bytes=25100-"]


def test_server_errors_are_retried(tmp_path, server):
    server.files["/Combine.zip"] = data = make_zip("Combine")
    server.fail_next = 2
    dest = tmp_path / "Combine.zip"
    dl.download_file(server.url("/Combine.zip"), dest, progress=False, allow_http=True, retries=3)
    assert dest.read_bytes() == data
    assert len(server.log) == 3


def test_persistent_server_errors_give_up_with_download_error(tmp_path, server):
    server.files["/Combine.zip"] = make_zip("Combine")
    server.fail_next = 100
    with pytest.raises(DownloadError, match="gave up after 2 retries"):
        dl.download_file(server.url("/Combine.zip"), tmp_path / "Combine.zip",
                         progress=False, allow_http=True, retries=2)
    assert len(server.log) == 3


def test_http_404_raises_download_error_naming_the_url(tmp_path, server):
    url = server.url("/missing.zip")
    with pytest.raises(DownloadError, match=re.escape(url)) as err:
        dl.download_official(tmp_path / "Params", urls={"Combine": url, "AE_whole": url},
                             progress=False, allow_http=True)
    assert "404" in str(err.value) and "Baidu" in str(err.value)
    assert len(server.log) == 1                    # a 404 is not retried


def test_web_page_instead_of_zip_raises_download_error(tmp_path, server):
    server.files["/Combine.zip"] = b"<html>log in to Dropbox</html>"
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="web page"):
        dl.download_file(server.url("/Combine.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True)


# --------------------------------------------------------------------------- verification

def test_checksum_mismatch_deletes_the_file_and_raises(tmp_path, official):
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="SHA-256 checksum mismatch.*run the download again"):
        dl.download_official(params, urls=official, checksums={"AE_whole": "0" * 64},
                             progress=False, allow_http=True)
    assert not list((params / ".download").iterdir())
    assert_nothing_installed(params, "AE_whole")


def test_matching_checksums_are_accepted(tmp_path, official, server):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True,
                         checksums={"Combine.zip": sha(server.files["/Combine.zip"]),
                                    "AE_whole.zip": sha(server.files["/AE_whole.zip"])})
    assert_complete_layout(params)


def test_size_mismatch_with_the_known_size_raises(tmp_path, official, server):
    size = len(server.files["/Combine.zip"]) + 1
    with pytest.raises(DownloadError, match="bytes"):
        dl.download_official(tmp_path / "Params", urls=official, progress=False, allow_http=True,
                             sizes={"Combine": size})
    assert_nothing_installed(tmp_path / "Params", "Combine")


def test_garbage_archive_raises_download_error_and_installs_nothing(tmp_path, official, server):
    server.files["/AE_whole.zip"] = random.Random(1).randbytes(50_000)
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="AE_whole.zip is not a usable archive"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "AE_whole")
    assert not (params / ".download" / "AE_whole.zip").exists()   # deleted: next run re-downloads


def test_crc_error_in_a_member_raises_download_error_and_installs_nothing(tmp_path, official, server):
    data = bytearray(server.files["/Combine.zip"])
    target = member_bytes("Combine/latest_net_G.pkl")
    at = bytes(data).index(target) + len(target) // 2      # stored, so the bytes are verbatim
    data[at] ^= 0xFF
    server.files["/Combine.zip"] = bytes(data)
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="Combine.zip.*CRC"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")


def test_archive_missing_expected_files_raises_and_installs_nothing(tmp_path, official, server):
    server.files["/Combine.zip"] = make_zip("Combine", skip=("latest_net_G.pkl",))
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="latest_net_G.pkl"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")


@pytest.mark.parametrize("member", ["../evil.pkl", "/tmp/evil.pkl", "Combine/../../evil.pkl"])
def test_zip_slip_members_are_refused(tmp_path, official, server, member):
    server.files["/Combine.zip"] = make_zip("Combine", extra={member: b"pwned"})
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="refusing to unpack"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")
    assert not list(tmp_path.rglob("evil.pkl"))


# --------------------------------------------------------------------------- unpacking

@pytest.mark.parametrize("prefix,junk", [
    ("", True),                       # files at the top, plus __MACOSX/ and .DS_Store junk
    ("{name}/", True),                # the usual top folder, with junk
    ("Params/{name}/", False),        # one level deeper
], ids=["no-top-folder-macosx", "top-folder-macosx", "nested"])
def test_archives_unpack_right_whatever_their_top_folder(tmp_path, server, prefix, junk):
    server.files["/Combine.zip"] = make_zip("Combine", prefix=prefix, junk=junk)
    server.files["/AE_whole.zip"] = make_zip("AE_whole", prefix=prefix, junk=junk,
                                             compression=zipfile.ZIP_DEFLATED)
    params = tmp_path / "Params"
    dl.download_official(params, progress=False, allow_http=True, urls={
        "Combine": server.url("/Combine.zip"), "AE_whole": server.url("/AE_whole.zip")})
    assert_complete_layout(params)
    assert sorted(p.name for p in params.iterdir()) == ["AE_whole", "Combine"]
    assert not list(params.rglob("._*")) and not list(params.rglob(".DS_Store"))


def test_a_crash_while_extracting_leaves_no_partial_folder(tmp_path, official, monkeypatch):
    real_copy, calls = dl.shutil.copyfileobj, []

    def crashing_copy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(dl.shutil, "copyfileobj", crashing_copy)
    params = tmp_path / "Params"
    with pytest.raises(KeyboardInterrupt):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "AE_whole")
    assert dl.missing_files(params) == dl.official_files()


def test_stale_unpack_folder_from_a_crash_is_removed_on_the_next_run(tmp_path, official):
    params = tmp_path / "Params"
    stale = params / ".unpack-dead" / "AE_whole"
    stale.mkdir(parents=True)
    (stale / "latest_net_encoder_.pkl").write_bytes(b"half")
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert not (params / ".unpack-dead").exists()
    assert_complete_layout(params)


def test_an_incomplete_existing_folder_is_moved_aside_not_deleted(tmp_path, official):
    params = tmp_path / "Params"
    (params / "Combine").mkdir(parents=True)
    (params / "Combine" / "my_notes.txt").write_text("keep me")
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_complete_layout(params)
    assert (params / "Combine.incomplete" / "my_notes.txt").read_text() == "keep me"


def test_an_archive_placed_by_hand_is_unpacked_without_downloading(tmp_path, official, server):
    params = tmp_path / "Params"
    (params / ".download").mkdir(parents=True)
    (params / ".download" / "AE_whole.zip").write_bytes(server.files["/AE_whole.zip"])
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_complete_layout(params)
    assert [p for p, _ in server.log] == ["/Combine.zip"]


# --------------------------------------------------------------------------- already there

def test_already_complete_params_is_left_alone(tmp_path, official, server, capsys):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    server.log.clear()
    stamps = {p: p.stat().st_mtime_ns for p in params.rglob("*")}
    capsys.readouterr()
    assert dl.download_official(params, urls=official, progress=False, allow_http=True) == params
    assert server.log == []
    assert {p: p.stat().st_mtime_ns for p in params.rglob("*")} == stamps
    assert "already complete" in capsys.readouterr().out


def test_only_the_incomplete_archive_is_downloaded(tmp_path, official, server):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    (params / "Combine" / "latest_net_G.pkl").unlink()
    server.log.clear()
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert [p for p, _ in server.log] == ["/Combine.zip"]
    assert_complete_layout(params)


# --------------------------------------------------------------------------- command line

def test_cli_downloads_into_the_given_params_dir(tmp_path, official):
    params = tmp_path / "P"
    rc = dl.main_download(["--params", str(params), "--url-combine", official["Combine"],
                           "--url-ae", official["AE_whole"], "--no-progress", "--allow-http"])
    assert rc == 0
    assert_complete_layout(params)


def test_cli_reports_failure_with_exit_code_1(tmp_path, server, capsys):
    url = server.url("/nope.zip")
    rc = dl.main_download(["--params", str(tmp_path / "P"), "--url-combine", url,
                           "--url-ae", url, "--no-progress", "--allow-http"])
    assert rc == 1
    assert "error:" in capsys.readouterr().err


def test_cli_subcommand_can_be_added_to_an_existing_parser(tmp_path, official):
    import argparse
    parser = argparse.ArgumentParser(prog="dfd_kit")
    dl.add_download_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download-official", "--params", str(tmp_path / "P"),
                              "--url-combine", official["Combine"], "--url-ae", official["AE_whole"],
                              "--no-progress", "--allow-http"])
    assert args.func(args) == 0
    assert_complete_layout(tmp_path / "P")


def test_a_second_concurrent_download_into_the_same_folder_is_refused(tmp_path, official, server):
    fcntl = pytest.importorskip("fcntl")
    import os
    params = tmp_path / "Params"
    params.mkdir()
    fd = os.open(params, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)           # as a running download would
        with pytest.raises(DownloadError, match="another download"):
            dl.download_official(params, urls=official, progress=False, allow_http=True)
    finally:
        os.close(fd)
    assert server.log == []


# --------------------------------------------------------------------------- what is trusted

def test_plain_http_and_other_schemes_are_refused_unless_asked(tmp_path, server):
    server.files["/Combine.zip"] = make_zip("Combine")
    for url in (server.url("/Combine.zip"), "file:///etc/hostname", "ftp://example.com/Combine.zip"):
        with pytest.raises(DownloadError, match="refusing to download"):
            dl.download_file(url, tmp_path / "Combine.zip", progress=False)
    assert server.log == []
    url = server.url("/Combine.zip")
    rc = dl.main_download(["--params", str(tmp_path / "P"), "--url-combine", url, "--url-ae", url, "--no-progress"])
    assert rc == 1 and server.log == []
    dl.download_file(url, tmp_path / "Combine.zip", progress=False, allow_http=True)   # asked for
    assert (tmp_path / "Combine.zip").read_bytes() == server.files["/Combine.zip"]


@pytest.mark.parametrize("start, target, allowed", [
    ("https://www.dropbox.com/s/x/AE_whole.zip?dl=1", "https://uc123.dl.dropboxusercontent.com/cd/0/x", True),
    ("https://www.dropbox.com/s/x/AE_whole.zip?dl=1", "https://www.dropbox.com/scl/fi/x?dl=1", True),
    ("https://www.dropbox.com/s/x/AE_whole.zip?dl=1", "http://uc123.dl.dropboxusercontent.com/cd/0/x", False),
    ("https://www.dropbox.com/s/x/AE_whole.zip?dl=1", "https://evil.example/AE_whole.zip", False),
    ("https://www.dropbox.com/s/x/AE_whole.zip?dl=1", "https://dropbox.com.evil.example/x", False),
    ("https://mirror.example.org/AE_whole.zip", "https://cdn.example.org/AE_whole.zip", True),
    ("https://mirror.example.org/AE_whole.zip", "https://example.net/AE_whole.zip", False),
], ids=["dropbox-cdn", "dropbox", "dropbox-http", "elsewhere", "lookalike", "mirror-cdn", "mirror-elsewhere"])
def test_redirects_go_only_over_https_to_the_hosts_own_domains(start, target, allowed):
    assert (dl.redirect_refusal(start, target) is None) == allowed
    assert (dl.redirect_refusal(start, target, allow_http=True) is None) == allowed   # never a step down


def test_a_redirect_to_another_host_is_refused(tmp_path, server):
    server.files["/Combine.zip"] = make_zip("Combine")
    server.redirects["/start.zip"] = server.url("/Combine.zip", host="localhost")
    with pytest.raises(DownloadError, match="refusing to follow a redirect.*localhost"):
        dl.download_file(server.url("/start.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True)
    assert [p for p, _ in server.log] == ["/start.zip"]


def test_range_is_dropped_when_a_redirect_changes_host(tmp_path, server):
    data = make_zip("Combine")
    server.files["/Combine.zip"] = data
    server.redirects["/start.zip"] = server.url("/Combine.zip", host="localhost")
    (tmp_path / "Combine.zip.part").write_bytes(b"bytes of some other file")
    dl.download_file(server.url("/start.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True,
                     hosts=("127.0.0.1", "localhost"))
    assert server.log == [("/start.zip", "bytes=24-"), ("/Combine.zip", None)]
    assert (tmp_path / "Combine.zip").read_bytes() == data


def changed_on_the_server(tmp_path, server):
    """A transfer cut after 1000 bytes of one version, then the server has another."""
    old, new = make_zip("Combine"), make_zip("Combine", extra={"readme.txt": b"version 2"})
    server.files["/Combine.zip"] = old
    server.cuts["/Combine.zip"] = [1000, 0]       # then a retry that brings nothing: give up
    with pytest.raises(DownloadError, match="run this again to resume"):
        dl.download_file(server.url("/Combine.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True,
                         retries=0)
    server.files["/Combine.zip"] = new
    server.log.clear()
    server.headers_seen.clear()
    return old, new


def test_a_file_changed_on_the_server_is_started_over_not_spliced(tmp_path, server):
    old, new = changed_on_the_server(tmp_path, server)
    dl.download_file(server.url("/Combine.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True)
    assert server.headers_seen[0]["If-Range"] == etag(old)
    assert (tmp_path / "Combine.zip").read_bytes() == new
    assert not list(tmp_path.glob("*.part*"))


def test_a_server_ignoring_if_range_is_caught_by_its_etag(tmp_path, server):
    old, new = changed_on_the_server(tmp_path, server)
    server.ignore_if_range = True
    dl.download_file(server.url("/Combine.zip"), tmp_path / "Combine.zip", progress=False, allow_http=True)
    assert [r for _, r in server.log] == ["bytes=1000-", None]   # the 206 refused, then from zero
    assert (tmp_path / "Combine.zip").read_bytes() == new


# --------------------------------------------------------------------------- what is unpacked

def set_zip_flag(data: bytes, member: str, bit: int) -> bytes:
    """Set a general-purpose flag bit of ``member`` in both its local and central headers."""
    import struct

    out, name = bytearray(data), member.encode()
    for sig, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = 0
        while (at := out.find(sig, at)) >= 0:
            n = struct.unpack_from("<H", out, at + name_len_at)[0]
            if bytes(out[at + name_at:at + name_at + n]) == name:
                struct.pack_into("<H", out, at + flag_at, struct.unpack_from("<H", out, at + flag_at)[0] | bit)
            at += 4
    return bytes(out)


def test_an_encrypted_member_is_refused_and_the_archive_deleted(tmp_path, official, server):
    server.files["/Combine.zip"] = set_zip_flag(server.files["/Combine.zip"], "Combine/latest_net_G.pkl", 0x1)
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="encrypted"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")
    assert not (params / ".download" / "Combine.zip").exists()   # the next run downloads it again


def test_a_corrupt_deflate_member_is_a_download_error_and_the_next_run_recovers(tmp_path, official, server):
    good = make_zip("Combine", compression=zipfile.ZIP_DEFLATED)
    info = zipfile.ZipFile(io.BytesIO(good)).getinfo("Combine/latest_net_G.pkl")
    data = bytearray(good)
    start = info.header_offset + 30 + len(info.filename.encode())   # the compressed stream
    data[start:start + 4] = b"\xff\xff\xff\xff"                      # an invalid deflate block
    server.files["/Combine.zip"] = bytes(data)
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="latest_net_G.pkl.*damaged"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")
    assert not (params / ".download" / "Combine.zip").exists()
    server.files["/Combine.zip"] = good
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_complete_layout(params)


def test_members_whose_names_clash_are_refused(tmp_path, official, server):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns about the duplicate, as it should
        server.files["/Combine.zip"] = make_zip("Combine", extra={"Combine/latest_net_G.pkl": b"the other one"})
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="both named"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert_nothing_installed(params, "Combine")
    assert not (params / ".download" / "Combine.zip").exists()


def test_members_differing_only_in_case_are_refused(tmp_path, official, server):
    server.files["/Combine.zip"] = make_zip("Combine", extra={"Combine/LATEST_NET_G.pkl": b"x"})
    with pytest.raises(DownloadError, match="different cases"):
        dl.download_official(tmp_path / "Params", urls=official, progress=False, allow_http=True)


def test_a_zip_bomb_is_refused_before_it_is_decompressed(tmp_path, official, server, monkeypatch):
    bomb = make_zip("Combine", skip=("latest_net_G.pkl",), compression=zipfile.ZIP_DEFLATED,
                    extra={"Combine/latest_net_G.pkl": bytes(32 << 20)})   # 32 MB of zeros: ratio ~1000
    server.files["/Combine.zip"] = bomb
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    params = tmp_path / "Params"
    with pytest.raises(DownloadError, match="would expand .* times"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert not [n for n in opened if n.startswith("Combine/")]   # nothing of Combine.zip was decompressed
    assert_nothing_installed(params, "Combine")


def test_only_the_expected_files_are_unpacked(tmp_path, official, server):
    server.files["/Combine.zip"] = make_zip("Combine", extra={"Combine/run_me.sh": b"#!/bin/sh\n",
                                                              "Combine/sub/extra.pkl": b"x"})
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert sorted(p.relative_to(params / "Combine").as_posix() for p in (params / "Combine").rglob("*")) == \
        sorted(dl.archive_files("Combine") + [dl.MANIFEST])


# --------------------------------------------------------------------------- what is found

def test_a_damaged_file_is_found_and_its_archive_downloaded_again(tmp_path, official, server, capsys):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    manifest = dl.read_manifest(params / "Combine")
    assert manifest["archive"]["sha256"] == sha(server.files["/Combine.zip"])
    assert manifest["archive"]["size"] == len(server.files["/Combine.zip"])
    g = params / "Combine" / "latest_net_G.pkl"
    data = bytearray(g.read_bytes())
    data[10] ^= 0xFF                    # same size, one byte changed
    g.write_bytes(bytes(data))
    server.log.clear()
    capsys.readouterr()
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert "damaged" in capsys.readouterr().out and "nothing to do" not in capsys.readouterr().out
    assert [p for p, _ in server.log] == ["/Combine.zip"]
    assert_complete_layout(params)
    assert (params / "Combine.incomplete" / "latest_net_G.pkl").read_bytes() == bytes(data)   # kept aside


def test_a_hand_unpacked_jittor13_file_with_a_bad_checksum_is_found(tmp_path, official, server):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    (params / "Combine" / dl.MANIFEST).unlink()         # as if unzipped by hand
    body = b"\x80\x04 a pickle"
    (params / "Combine" / "latest_net_G.pkl").write_bytes(body + hashlib.sha1(b"other").digest() + b"HCAJSLHD")
    assert dl.damaged_files(params, "Combine") == ["Combine/latest_net_G.pkl"]
    assert dl.damaged_files(params, "AE_whole") == []


def test_an_archive_that_changed_since_it_was_first_unpacked_is_refused(tmp_path, official, server):
    params = tmp_path / "Params"
    dl.download_official(params, urls=official, progress=False, allow_http=True)
    (params / "Combine" / "latest_net_G.pkl").unlink()
    server.files["/Combine.zip"] = make_zip("Combine", extra={"readme.txt": b"version 2"})
    with pytest.raises(DownloadError, match="not the archive recorded.*has changed"):
        dl.download_official(params, urls=official, progress=False, allow_http=True)
    assert not (params / ".download" / "Combine.zip").exists()


def test_git_ignores_the_download_folders():
    import shutil
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("Params/.download/AE_whole.zip", "Params/.download/AE_whole.zip.part",
                 "Params/.unpack-x1y2/AE_whole/latest_net_G.pkl", "Params/Combine.incomplete/a.pkl",
                 "Params/Combine.incomplete.1/a.pkl", "Params/AE_whole/.manifest.json"):
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} is not ignored"
