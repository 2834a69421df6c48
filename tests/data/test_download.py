"""The dataset downloader against a miniature Zenodo record served from 127.0.0.1 by the test itself."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from raw2logit.data.archives import unpack
from raw2logit.data.download import download_file, download_record, fetch_record
from raw2logit.data.layout import check_layout
from raw2logit.errors import InputError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "download_datasets.py"
RECORD_PATH = "/api/records/5235536"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tiff_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    mosaic = np.random.default_rng(seed).integers(0, 2**16, size=(16, 16), dtype=np.uint16)
    tifffile.imwrite(buffer, mosaic)
    return buffer.getvalue()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:9, 2:7] = 255
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


MICROSCOPY_MEMBERS = {
    "microscopy/images/raw_scale100/x.tiff": tiff_bytes(0),
    "microscopy/labels/Ma190c_annotations.dat": b"x LYT\n",
}
DRONE_MEMBERS = {  # one folder deeper, as an archive of a "Raw-Drone" folder would be
    "Raw-Drone/drone/masks_full/a.png": png_bytes(),
    "Raw-Drone/drone/images_full/raw_scale100/a.tif": tiff_bytes(1),
    "Raw-Drone/README.txt": b"Raw-Drone, CC-BY 4.0\n",
}


class RecordServer:
    """A miniature Zenodo: record JSON at RECORD_PATH, file bytes at /files/<name>, Range supported.

    ``requests`` logs (method, path, Range header, status) per request; ``ignore_range`` answers
    200 with the whole body; ``drop_after[name] = n`` sends only n bytes once, then hangs up.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.requests: list[tuple[str, str, str | None, int]] = []
        self.ignore_range = False
        self.drop_after: dict[str, int] = {}
        self.listed: dict[str, bytes] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def record_url(self) -> str:
        return self.base + RECORD_PATH

    def add(self, name: str, data: bytes, served: bytes | None = None) -> None:
        """List ``data`` in the record; serve ``served`` (default: the same bytes) for it."""
        self.listed[name] = data
        (self.directory / name).write_bytes(data if served is None else served)
        entries = [
            {
                "key": key,
                "size": len(listed),
                "checksum": f"md5:{md5(listed)}",
                "links": {"self": f"{self.base}/files/{key}"},
            }
            for key, listed in self.listed.items()
        ]
        (self.directory / "record.json").write_text(json.dumps({"id": 5235536, "files": entries}))

    def file_gets(self, name: str | None = None) -> list[tuple[str, str, str | None, int]]:
        return [r for r in self.requests if r[1].startswith(f"/files/{name or ''}")]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if self.path == RECORD_PATH:
                    body, name = (server.directory / "record.json").read_bytes(), None
                elif self.path.startswith("/files/") and (server.directory / self.path[7:]).is_file():
                    name = self.path[7:]
                    body = (server.directory / name).read_bytes()
                else:
                    server.requests.append(("GET", self.path, None, 404))
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", requested or "")
                if match and name and not server.ignore_range:
                    start, status = int(match.group(1)), 206
                    if start >= len(body):
                        server.requests.append(("GET", self.path, requested, 416))
                        self.send_error(416)
                        return
                server.requests.append(("GET", self.path, requested, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                cut = server.drop_after.pop(name, None) if name else None
                self.wfile.write(body[start:] if cut is None else body[start : start + cut])

        return Handler


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    record = RecordServer(served)
    record.add("microscopy.zip", zip_bytes(MICROSCOPY_MEMBERS))
    record.add("drone.zip", zip_bytes(DRONE_MEMBERS))
    good = b"calibration table\n" * 64
    record.add("corrupt.bin", good, served=good[:100] + b"X" + good[101:])  # same size, one byte off
    record.thread.start()
    yield record
    record.httpd.shutdown()
    record.httpd.server_close()
    record.thread.join(timeout=5)


def run_quietly(server: RecordServer, root: Path, **kwargs):
    return download_record(server.record_url, root, log=lambda message: None, retry_wait=0, **kwargs)


def test_record_metadata_is_parsed(server):
    files = {remote.name: remote for remote in fetch_record(server.record_url)}
    assert set(files) == {"microscopy.zip", "drone.zip", "corrupt.bin"}
    assert files["drone.zip"].md5 == md5(server.listed["drone.zip"])
    assert files["drone.zip"].size == len(server.listed["drone.zip"])
    assert files["drone.zip"].url == f"{server.base}/files/drone.zip"


def test_older_api_fields_and_relative_links_are_accepted(server):
    data = server.listed["drone.zip"]
    old = {"files": [{"filename": "drone.zip", "filesize": len(data), "checksum": md5(data), "links": {"download": "/files/drone.zip", "self": "/api/meta/1"}}]}  # fmt: skip
    (server.directory / "record.json").write_text(json.dumps(old))
    (remote,) = fetch_record(server.record_url)
    assert (remote.name, remote.size, remote.md5) == ("drone.zip", len(data), md5(data))
    assert remote.url == f"{server.base}/files/drone.zip"


def test_full_download_unpacks_into_the_layout(server, tmp_path):
    root = tmp_path / "data"
    summary = run_quietly(server, root, only=["*.zip"])

    assert [status for _, _, status in summary.files] == ["downloaded", "downloaded"]
    assert summary.layout.present == ("microscopy", "drone")
    assert check_layout(root).scales == {"microscopy": ("raw_scale100",), "drone": ("raw_scale100",)}
    for member, data in MICROSCOPY_MEMBERS.items():
        assert (root / member).read_bytes() == data
    for member, data in DRONE_MEMBERS.items():
        lifted = member.removeprefix("Raw-Drone/") if "/drone/" in member else member
        assert (root / lifted).read_bytes() == data
    assert not (root / "Raw-Drone" / "drone").exists()  # moved up, the rest of the folder kept
    assert sorted(p.name for p in root.iterdir()) == ["Raw-Drone", "downloads", "drone", "microscopy"]
    assert sorted(p.name for p in (root / "downloads").iterdir() if not p.name.startswith(".")) == [
        "drone.zip",
        "microscopy.zip",
    ]


def test_corrupt_file_is_rejected_and_removed(server, tmp_path):
    root = tmp_path / "data"
    good = server.listed["corrupt.bin"]
    actual = md5((server.directory / "corrupt.bin").read_bytes())
    with pytest.raises(InputError, match=r"corrupt\.bin") as caught:
        run_quietly(server, root)
    message = str(caught.value)
    assert md5(good) in message and actual in message
    assert not (root / "downloads" / "corrupt.bin").exists()
    assert not (root / "downloads" / "corrupt.bin.part").exists()
    # The other files of the record were still fetched, verified and unpacked.
    assert check_layout(root).present == ("microscopy", "drone")


def test_partial_part_is_resumed_with_a_range_request(server, tmp_path):
    data = server.listed["drone.zip"]
    destination = tmp_path / "drone.zip"
    Path(f"{destination}.part").write_bytes(data[:200])

    status = download_file(f"{server.base}/files/drone.zip", destination, md5(data), len(data))

    assert status == "resumed"
    assert server.file_gets("drone.zip") == [("GET", "/files/drone.zip", "bytes=200-", 206)]
    assert destination.read_bytes() == data
    assert not Path(f"{destination}.part").exists()


def test_server_ignoring_range_still_yields_the_right_file(server, tmp_path):
    server.ignore_range = True
    data = server.listed["drone.zip"]
    destination = tmp_path / "drone.zip"
    Path(f"{destination}.part").write_bytes(data[:200])

    status = download_file(f"{server.base}/files/drone.zip", destination, md5(data), len(data))

    assert status == "downloaded"
    assert server.file_gets("drone.zip") == [("GET", "/files/drone.zip", "bytes=200-", 200)]
    assert destination.read_bytes() == data


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    data = server.listed["microscopy.zip"]
    server.drop_after["microscopy.zip"] = 300
    destination = tmp_path / "microscopy.zip"

    status = download_file(
        f"{server.base}/files/microscopy.zip", destination, md5(data), len(data), retry_wait=0
    )

    assert status == "resumed"
    assert [r[2:] for r in server.file_gets("microscopy.zip")] == [(None, 200), ("bytes=300-", 206)]
    assert destination.read_bytes() == data


def test_second_run_skips_verified_files(server, tmp_path):
    root = tmp_path / "data"
    run_quietly(server, root, only=["*.zip"])
    gets_after_first_run = len(server.file_gets())

    summary = run_quietly(server, root, only=["*.zip"])

    assert len(server.file_gets()) == gets_after_first_run  # no GET for verified files
    assert [status for _, _, status in summary.files] == ["skipped", "skipped"]
    assert summary.unpacked == []  # already unpacked, not extracted again
    assert summary.layout.present == ("microscopy", "drone")


def test_damaged_download_is_replaced_and_unpacked_again(server, tmp_path):
    root = tmp_path / "data"
    run_quietly(server, root, only=["drone.zip"])
    (root / "downloads" / "drone.zip").write_bytes(b"not the archive")

    summary = run_quietly(server, root, only=["drone.zip"])

    assert summary.files == [("drone.zip", len(server.listed["drone.zip"]), "downloaded")]
    assert summary.unpacked == ["drone.zip"]
    assert (root / "downloads" / "drone.zip").read_bytes() == server.listed["drone.zip"]


def test_only_pattern_matching_nothing_names_the_choices(server, tmp_path):
    with pytest.raises(InputError, match=r"matches \*\.rar.*microscopy\.zip, drone\.zip, corrupt\.bin"):
        run_quietly(server, tmp_path / "data", only=["*.rar"])


@pytest.mark.parametrize("member", ["../evil.txt", "microscopy/../../evil.txt", "/tmp/evil.txt"])
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_member_escaping_the_root_is_refused(tmp_path, member, kind):
    archive = tmp_path / f"bad.{kind}"
    members = {"microscopy/labels/Ma190c_annotations.dat": b"x LYT\n", member: b"gotcha"}
    if kind == "zip":
        archive.write_bytes(zip_bytes(members))
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                bundle.addfile(info, io.BytesIO(data))
    root = tmp_path / "root" / "data"

    with pytest.raises(InputError, match="points outside the data root"):
        unpack(archive, root)

    assert not (tmp_path / "root" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list(root.iterdir()) == []  # nothing extracted, staging removed


def test_missing_dataset_is_named(tmp_path):
    (tmp_path / "microscopy" / "images" / "raw_scale010").mkdir(parents=True)
    tifffile.imwrite(
        tmp_path / "microscopy" / "images" / "raw_scale010" / "y.tiff", np.zeros((4, 4), np.uint16)
    )
    layout = check_layout(tmp_path)
    assert layout.present == ()
    assert "Ma190c_annotations.dat" in layout.missing["microscopy"]
    assert str(tmp_path / "drone") in layout.missing["drone"]
    with pytest.raises(InputError, match="Raw-Drone is missing"):
        layout.require("drone")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_downloads_and_checks(server, tmp_path):
    root = str(tmp_path / "data")
    result = run_cli("--root", root, "--record", server.record_url, "--only", "*.zip")
    assert result.returncode == 0, result.stderr
    assert "drone.zip: downloaded" in result.stdout and "10.5281/zenodo.5235536" in result.stdout
    assert result.stderr == ""

    again = run_cli("--root", root, "--record", server.record_url, "--only", "*.zip")
    assert again.returncode == 0 and "drone.zip: skipped" in again.stdout

    check = run_cli("--root", root, "--check")
    assert check.returncode == 0 and "Raw-Drone: present" in check.stdout


def test_cli_reports_a_checksum_failure_in_one_line(server, tmp_path):
    result = run_cli("--root", str(tmp_path / "data"), "--record", server.record_url, "--only", "corrupt*")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: corrupt.bin") and "failed verification" in line


def test_tar_archive_is_unpacked_and_merged(tmp_path):
    archive = tmp_path / "Raw-Microscopy.tar.gz"
    members = {f"Raw-Microscopy/{name}": data for name, data in MICROSCOPY_MEMBERS.items()}
    members["__MACOSX/Raw-Microscopy/microscopy/._x.tiff"] = b"resource fork"
    with tarfile.open(archive, "w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    root = tmp_path / "data"
    (root / "microscopy" / "images" / "raw_scale001").mkdir(parents=True)  # from another archive

    assert unpack(archive, root) == ["microscopy"]

    assert sorted(p.name for p in root.iterdir()) == ["microscopy"]  # no __MACOSX, no staging
    assert (root / "microscopy" / "images" / "raw_scale001").is_dir()  # merged, not replaced
    for member, data in MICROSCOPY_MEMBERS.items():
        assert (root / member).read_bytes() == data
