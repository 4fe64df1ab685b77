"""Downloads without the network: offline errors, checksum checks, extraction, atomic moves."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from unigrf.cli import main
from unigrf.data import download as dl
from unigrf.data.download import REGISTRY, DownloadError, DownloadSpec, download, download_spec, git_blob_sha1

U_DATA = b"1\t10\t4\t100\n2\t20\t3\t50\n"


def make_zip(path: Path, folder: str, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{folder}/{name}", data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def spec_for(archive: Path, archive_md5: str | None, key_md5: str | None = None) -> DownloadSpec:
    return DownloadSpec(
        name="tiny",
        url=archive.as_uri(),  # file:// — urllib opens it like an http URL, no network
        key_file="u.data",
        archive_md5=archive_md5,
        archive_dir="tiny",
        key_md5=key_md5 or hashlib.md5(U_DATA).hexdigest(),
    )


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_zip_download_verified_extracted_and_moved(tmp_path):
    archive = tmp_path / "tiny.zip"
    md5 = make_zip(archive, "tiny", {"u.data": U_DATA, "README": b"hi"})
    target = tmp_path / "data" / "tiny"
    key = download_spec(spec_for(archive, md5), target, log=lambda m: None)
    assert key == target / "u.data" and key.read_bytes() == U_DATA
    assert (target / "README").read_bytes() == b"hi"
    assert leftovers(tmp_path / "data") == []
    # a second call finds the verified file and does not fetch again
    messages = []
    download_spec(spec_for(archive, md5), target, opener=_unreachable, log=messages.append)
    assert "already present and verified" in messages[0]


def test_archive_checksum_mismatch_leaves_nothing(tmp_path):
    archive = tmp_path / "tiny.zip"
    make_zip(archive, "tiny", {"u.data": U_DATA})
    target = tmp_path / "data" / "tiny"
    with pytest.raises(DownloadError, match="checksum mismatch .* expected 0{32}"):
        download_spec(spec_for(archive, "0" * 32), target, log=lambda m: None)
    assert not target.exists() and leftovers(tmp_path / "data") == []


def test_key_file_checksum_is_checked_after_extraction(tmp_path):
    archive = tmp_path / "tiny.zip"
    md5 = make_zip(archive, "tiny", {"u.data": U_DATA + b"tampered\n"})
    target = tmp_path / "data" / "tiny"
    with pytest.raises(DownloadError, match="u.data failed its checksum"):
        download_spec(spec_for(archive, md5), target, log=lambda m: None)
    assert not target.exists()


def test_not_a_zip_and_missing_member(tmp_path):
    bogus = tmp_path / "tiny.zip"
    bogus.write_bytes(b"not a zip at all")
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_spec(spec_for(bogus, None), tmp_path / "a", log=lambda m: None)
    archive = tmp_path / "other.zip"
    make_zip(archive, "elsewhere", {"u.data": U_DATA})
    with pytest.raises(DownloadError, match="lacks tiny/u.data"):
        download_spec(spec_for(archive, None), tmp_path / "b", log=lambda m: None)


def test_plain_file_download(tmp_path):
    source = tmp_path / "ratings_Books.csv"
    source.write_bytes(b"A,B,5.0,1\n")
    spec = DownloadSpec(name="books", url=source.as_uri(), key_file="ratings_Books.csv")
    key = download_spec(spec, tmp_path / "books", log=lambda m: None)
    assert key.read_bytes() == b"A,B,5.0,1\n" and leftovers(tmp_path) == []


def _unreachable(url, timeout):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_offline_error_says_url_where_and_data_dir(tmp_path):
    target = tmp_path / "ml-100k"
    with pytest.raises(DownloadError) as err:
        download("ml-100k", target, opener=_unreachable, log=lambda m: None)
    message = str(err.value)
    assert REGISTRY["ml-100k"].url in message
    assert f"into {target}" in message and str(target / "u.data") in message
    assert f"--data-dir {target}" in message
    assert not target.exists() and leftovers(tmp_path) == []


def test_unreachable_url_fails_fast(tmp_path):
    """A real connection attempt to a closed local port: refused at once, no hanging."""
    spec = DownloadSpec(name="x", url="http://127.0.0.1:9/ml-100k.zip", key_file="u.data", archive_dir="x")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:9/ml-100k\.zip"):
        download_spec(spec, tmp_path / "x", timeout=2.0, log=lambda m: None)
    assert time.monotonic() - start < 10


def test_cli_download_offline_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", _unreachable)
    rc = main(["data", "download", "ml-1m", "--data-dir", str(tmp_path / "ml-1m")])
    err = capsys.readouterr().err
    assert rc == 2 and "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in err
    assert "--data-dir" in err and "Traceback" not in err


def test_cli_download_success_prints_next_step(tmp_path, capsys, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    md5 = make_zip(archive, "ml-100k", {"u.data": U_DATA})
    spec = DownloadSpec(
        name="ml-100k",
        url=archive.as_uri(),
        key_file="u.data",
        archive_md5=md5,
        archive_dir="ml-100k",
        key_md5=hashlib.md5(U_DATA).hexdigest(),
    )
    monkeypatch.setitem(REGISTRY, "ml-100k", spec)
    assert main(["data", "download", "ml-100k", "--results-dir", str(tmp_path / "results")]) == 0
    target = tmp_path / "results" / "raw" / "ml-100k"
    assert (target / "u.data").read_bytes() == U_DATA
    assert f"--data-dir {target}" in capsys.readouterr().out


def test_registry_checksums_match_what_we_have(ml100k_dir):
    assert dl.key_file_ok(REGISTRY["ml-100k"], ml100k_dir / "u.data")
    for spec in REGISTRY.values():
        assert spec.url.startswith(("https://files.grouplens.org/", "http://snap.stanford.edu/"))
        assert spec.archive_md5 is None or len(spec.archive_md5) == 32


def test_git_blob_sha1_matches_git(tmp_path):
    # the ids `git hash-object` prints for an empty file and for "hello\n"
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    assert git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_streamed_response_with_length(tmp_path):
    """An http-like response (headers, read in chunks) is streamed to disk whole."""

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(U_DATA))}

    spec = DownloadSpec(name="t", url="http://example.invalid/u.data", key_file="u.data")
    key = download_spec(
        spec, tmp_path / "t", opener=lambda url, timeout: Response(U_DATA), log=lambda m: None
    )
    assert key.read_bytes() == U_DATA
