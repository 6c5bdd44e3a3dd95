"""`nnmamba serve` under hostile and heavy use: one regression test per finding of the security review
(``docs/reviews/server-security-review.md``: H1-H2, M1-M5, L1-L11 and the informational notes), with its reproducer.

A real server on a free loopback port (in a thread, or ``nnmamba serve`` as a child where a process matters), real
model packages with random weights, plain sockets and urllib. Every wait is bounded.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from raw_http import RawHTTP  # noqa: E402

from nnmamba.geometry import Geometry, direction_problem  # noqa: E402
from nnmamba.imaging import write_image  # noqa: E402
from nnmamba.inference import tile_starts  # noqa: E402
from nnmamba.server import uploads  # noqa: E402
from nnmamba.server.errors import ServiceError  # noqa: E402
from nnmamba.server.jobs import Job, JobQueue, _failure_message  # noqa: E402
from nnmamba.server.main import BackgroundServer  # noqa: E402
from nnmamba.server.scratch import LOCK_NAME, ScratchFolder, _try_lock  # noqa: E402
from nnmamba.server.service import tile_count  # noqa: E402
from nnmamba.server.settings import ServerSettings, write_token_file  # noqa: E402

from model_packages import classification_package, segmentation_package  # noqa: E402

TOKEN = "hardening-token-0123456789abcdefghij"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CT = ROOT / "Resources" / "SampleData" / "NNMambaDemoAbdomenCT.nrrd"
GEOMETRY = Geometry.create((-12.5, 30.0, 7.25), (0.8, 0.9, 1.2))
LINUX = sys.platform.startswith("linux")


# ------------------------------------------------------------------------------------------------------ helpers

def make_volume(shape=(20, 24, 28), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return (800 * np.exp(-4 * (grid ** 2).sum(0)) + rng.normal(0, 60, shape)).astype(np.int16)


def geometry_header(origin=(0, 0, 0), spacing=(1, 1, 1), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    return json.dumps({"origin": list(origin), "spacing": list(spacing), "direction": list(direction)})


class Client(RawHTTP):
    """RawHTTP with this file's token and its refusal checks."""

    def __init__(self, url, token=TOKEN):
        super().__init__(url, token)

    def refused(self, method, path, status, contains="", **kwargs):
        answer = self.json(method, path, expect=status, **kwargs)
        assert set(answer) == {"detail"} and isinstance(answer["detail"], str), answer
        assert contains.lower() in answer["detail"].lower(), answer["detail"]
        assert self.json("GET", "/health", auth=False) == {"status": "ok"}
        return answer["detail"]

    def upload(self, array, header=None, expect=201):
        array = np.asarray(array)
        query = urllib.parse.urlencode({"shape": ",".join(map(str, array.shape[-3:])), "dtype": array.dtype.name})
        return self.json("POST", "/sessions?" + query, expect=expect, body=array.tobytes(),
                         headers={"X-Geometry": header or geometry_header()})

    def upload_file(self, data, filename):
        return self.call("POST", "/sessions/file?" + urllib.parse.urlencode({"filename": filename}), body=data)

    def submit(self, session, task, model, expect=202, **options):
        return self.json("POST", f"/sessions/{session}/jobs", expect=expect,
                         json_body={"task": task, "model": model, "options": options})

    def wait(self, job_id, timeout=60, until=("done", "failed", "cancelled")):
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("GET", f"/jobs/{job_id}")
            if job["state"] in until:
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.02)

    def timed(self, method, path, **kwargs):
        started = time.perf_counter()
        status, _, body = self.call(method, path, timeout=10, **kwargs)
        return status, time.perf_counter() - started, body


def raw_socket(client, request_head, body=b""):
    sock = socket.create_connection((client.host, client.port), timeout=30)
    sock.sendall(request_head.encode("latin-1") + body)
    return sock


def read_answer(sock):
    """(status, parsed JSON body) of the answer on a raw socket (Content-Length framing)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), json.loads(body) if body else None


def upload_head(client, query, length, geometry=None, extra=""):
    return (f"POST /sessions?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {client.token}\r\n"
            f"Content-Type: application/octet-stream\r\nX-Geometry: {geometry or geometry_header()}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n")


def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    segmentation_package(folder / "test-seg")
    segmentation_package(folder / "test-seg-spaced", spacing=(1.0, 1.0, 1.0), model_id="test-seg-spaced")
    classification_package(folder / "test-cls")
    return folder


def start_server(models_dir, **overrides):
    options = dict(token=TOKEN, host="127.0.0.1", port=0, device="cpu", models_dir=models_dir, session_ttl=600,
                   max_upload_bytes=4 * 2**20, max_voxels=600_000)
    options.update(overrides)
    return BackgroundServer(ServerSettings(**options))


@pytest.fixture(scope="module")
def server(models_dir):
    with start_server(models_dir) as running:
        yield running


@pytest.fixture
def client(server):
    return Client(server.url)


@pytest.fixture
def busy_device(server):
    """Hold the device as a running job does, until the test ends."""
    release, held = threading.Event(), threading.Event()

    def hold():
        with server.app.state.service.device_gate.job():
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    yield release
    release.set()
    thread.join(10)


# ------------------------------------------------------------- H1: an upload never makes the server read its files

def nrrd_header(*lines, sizes="4 4 4", encoding="raw"):
    return ("NRRD0004\ntype: short\ndimension: 3\nsizes: " + sizes + f"\nencoding: {encoding}\nendian: little\n"
            + "".join(line + "\n" for line in lines)).encode("latin-1")


DETACHED_NRRD = [
    nrrd_header("data file: {target}"),
    nrrd_header("datafile: {target}"),
    nrrd_header("DATA FILE: {target}"),
    nrrd_header("Data  File: {target}"),
    nrrd_header("data file: LIST", ) + b"{target}\n",
    nrrd_header("data file: slice%03d.raw 1 4 1"),
    nrrd_header("datafile:={target}"),
    nrrd_header("line skip: 13", *(["# " + "x" * 1000] * 70), "data file: {target}"),   # the review's reproducer
]


@pytest.mark.parametrize("header", DETACHED_NRRD, ids=range(len(DETACHED_NRRD)))
def test_nrrd_naming_another_file_is_refused_alike_whether_it_exists_or_not(client, tmp_path, header):
    """H1 (D8, D9, D12, D15): every form of NRRD 'data file' teem understands, also after 70 KB of comments;
    the same answer for an existing and a missing target (no existence oracle)."""
    details = set()
    for target in (SAMPLE_CT, tmp_path / "missing.nrrd"):
        body = header.replace(b"{target}", str(target).encode()) + b"\n"
        status, _, answer = client.upload_file(body, "a.nrrd")
        assert status == 422, answer
        details.add(json.loads(answer)["detail"])
    assert len(details) == 1, details
    detail = details.pop()
    assert "separate data file" in detail or "longer than 64 KiB" in detail
    assert str(SAMPLE_CT) not in detail and "missing" not in detail


DETACHED_MHA = [
    "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = {target}\n",
    "ObjectType = Image\nNDims = 3\nComment = ElementDataFile = LOCAL\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
    "ElementDataFile = {target}\n",                                             # the review's bypass (D11)
    "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile: {target}\n",
    "ObjectType = Image\nNDims = 3\nelementdatafile = LOCAL\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
    "ElementDataFile = {target}\n",
    "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = LIST\n{target}\n",
    "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nHeaderSize = 10\n"
    "ElementDataFile = {target}\n",
    "ObjectType = Image\nNDims = 3\nComment = x\rElementDataFile = LOCAL\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
    "ElementDataFile = {target}\n",                                             # a stray CR: readers disagree
    "ObjectType = Image\n" + ("Comment = " + "x" * 1000 + "\n") * 70 + "ElementDataFile = {target}\n",
]


@pytest.mark.parametrize("header", DETACHED_MHA, ids=range(len(DETACHED_MHA)))
def test_metaimage_naming_another_file_is_refused_alike(client, tmp_path, header):
    """H1 (D10-D14): ElementDataFile other than LOCAL on any line, in any spelling, after a decoy; /dev/urandom,
    /proc/self/environ and a token file get the same answer as a missing file, and no value is echoed."""
    token = tmp_path / "token"
    token.write_text("secret")
    token.chmod(0o600)
    details = set()
    for target in (SAMPLE_CT, tmp_path / "missing.raw", "/dev/urandom", "/proc/self/environ", token):
        status, _, answer = client.upload_file(header.replace("{target}", str(target)).encode() + bytes(128),
                                               "d.mha")
        assert status == 422, answer
        details.add(json.loads(answer)["detail"])
    assert len(details) == 1, details
    detail = details.pop()
    assert any(why in detail for why in ("ElementDataFile = LOCAL", "longer than 64 KiB", "carriage return")), detail


def test_nifti_header_image_pairs_are_refused(client, tmp_path):
    """H1: a .nii whose magic is 'ni1' (a .hdr/.img pair) would make the reader open a second file."""
    write_image(tmp_path / "ct.nii", make_volume(), GEOMETRY, compress=False)
    data = bytearray((tmp_path / "ct.nii").read_bytes())
    assert data[344:348] == b"n+1\0"
    data[344:348] = b"ni1\0"
    status, _, answer = client.upload_file(bytes(data), "ct.nii")
    assert status == 422 and "separate .img file" in json.loads(answer)["detail"]
    status, _, answer = client.upload_file(gzip.compress(bytes(data)), "ct.nii.gz")
    assert status == 422 and "separate .img file" in json.loads(answer)["detail"]


def test_a_header_longer_than_the_limit_is_refused_not_half_read(client, tmp_path):
    """H1: a self-contained NRRD with a 70 KB header is refused whole (no part of it is trusted)."""
    write_image(tmp_path / "ct.nrrd", make_volume(), GEOMETRY, compress=False)
    data = (tmp_path / "ct.nrrd").read_bytes()
    head, _, rest = data.partition(b"\n")
    long = head + b"\n" + b"# comment\n" * 7000 + rest
    detail = client.refused("POST", "/sessions/file?filename=ct.nrrd", 422, "longer than 64 KiB", body=long)
    assert "comments" in detail


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii", ".nii.gz"])
def test_self_contained_files_with_metadata_are_accepted(client, tmp_path, suffix):
    """H1: the stricter parsing still reads what SimpleITK, Slicer and the samples write, compressed or not."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(make_volume())
    GEOMETRY.apply_to_sitk(image)
    image.SetMetaData("ITK_original_direction", "[UNKNOWN]")
    image.SetMetaData("Comment", "ElementDataFile = /etc/passwd")
    for compress in (False, True):
        path = tmp_path / f"ct{compress}{suffix}"
        sitk.WriteImage(image, str(path), compress)
        status, _, answer = client.upload_file(path.read_bytes(), path.name)
        assert status == 201, answer
    status, _, answer = client.upload_file(SAMPLE_CT.read_bytes(), SAMPLE_CT.name)
    assert status == 201 and json.loads(answer)["shape"] == [1, 56, 96, 96]


def test_no_message_echoes_a_voxel_value(client, tmp_path):
    """H1 (D14): a constant volume is refused without saying its value."""
    write_image(tmp_path / "flat.nrrd", np.full((8, 8, 8), 90, np.int16), GEOMETRY)
    detail = client.refused("POST", "/sessions/file?filename=flat.nrrd", 422, "blank",
                            body=(tmp_path / "flat.nrrd").read_bytes())
    assert "90" not in detail
    status, _, answer = client.call("POST", "/sessions?shape=8,8,8&dtype=int16", body=np.full(512, 77, "<i2").tobytes(),
                                    headers={"X-Geometry": geometry_header()})
    assert status == 422 and "blank" in json.loads(answer)["detail"] and "77" not in json.loads(answer)["detail"]


# ------------------------------------------------------------------------------- H2: the API never freezes

def _click_request(client, session, timeout, results, point=(10.0, 10.0, 10.0)):
    body = json.dumps({"model": "test-seg", "positive": [list(point)]}).encode()
    try:
        status, _, data = client.call("POST", f"/sessions/{session}/click", json_body=body, timeout=timeout)
        results.append(status)
    except (OSError, http.client.HTTPException):
        results.append("gone")


def test_clicks_waiting_for_a_busy_device_hold_no_thread(models_dir, caplog):
    """H2 (F9, F10): 50 waiting clicks (more than the 40 worker threads), 45 of them abandoned by their clients:
    /health, /version, job polling and cancel still answer within a second; the abandoned clicks stop waiting."""
    caplog.set_level(logging.INFO, logger="nnmamba.server")
    with start_server(models_dir, max_waiting_clicks=64) as running:
        client = Client(running.url)
        gate = running.app.state.service.device_gate
        session = client.upload(make_volume(seed=1))["id"]
        release, held = threading.Event(), threading.Event()

        def hold():
            with gate.job():
                held.set()
                release.wait(120)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert held.wait(10)
        job = client.submit(session, "classification", "test-cls")["id"]
        patient, abandoned = [], []
        threads = [threading.Thread(target=_click_request, args=(client, session, 60, patient), daemon=True)
                   for _ in range(5)]
        threads += [threading.Thread(target=_click_request, args=(client, session, 5, abandoned), daemon=True)
                    for _ in range(45)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while gate.waiting_clicks < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.waiting_clicks == 50
        for method, path in (("GET", "/health"), ("GET", "/version"), ("GET", f"/jobs/{job}"),
                             ("GET", f"/sessions/{session}")):
            status, seconds, _ = client.timed(method, path)
            assert status == 200 and seconds < 1.0, (path, seconds)
        status, seconds, body = client.timed("DELETE", f"/jobs/{job}")
        assert status == 202 and seconds < 1.0 and json.loads(body)["state"] in ("cancelled", "cancelling")
        deadline = time.monotonic() + 15           # the abandoned clients gave up after 5 s
        while gate.waiting_clicks > 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gate.waiting_clicks == 5 and abandoned.count("gone") == 45
        release.set()
        for thread in threads:
            thread.join(60)
        assert patient == [200] * 5
        assert client.json("GET", "/environment")["clicks"] == {"waiting": 0}
    records = [r for r in caplog.records if r.name == "nnmamba.server"]
    assert len([r for r in records if "disconnected" in r.getMessage()]) == 45
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info]


def test_clicks_beyond_the_cap_get_503_at_once(models_dir):
    """H2: at most max_waiting_clicks wait; the next one is answered 503 immediately, and a click that waited
    click_wait seconds gets 503 too."""
    with start_server(models_dir, max_waiting_clicks=3, click_wait=3.0) as running:
        client = Client(running.url)
        gate = running.app.state.service.device_gate
        session = client.upload(make_volume(seed=2))["id"]
        release = threading.Event()

        def hold():
            with gate.job():
                release.wait(60)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        time.sleep(0.2)
        results = []
        waiting = [threading.Thread(target=_click_request, args=(client, session, 30, results)) for _ in range(3)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while gate.waiting_clicks < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.perf_counter()
        detail = client.refused("POST", f"/sessions/{session}/click", 503, "already waiting",
                                json_body={"model": "test-seg", "positive": [[10.0, 10.0, 10.0]]})
        assert time.perf_counter() - started < 1.0 and "try again" in detail
        for thread in waiting:
            thread.join(30)
        assert results == [503] * 3           # each waited click_wait (3 s) for the device
        release.set()
        holder.join(10)
        answer = client.json("POST", f"/sessions/{session}/click",
                             json_body={"model": "test-seg", "positive": [[10.0, 10.0, 10.0]]})
        assert answer["label"] >= 0


def test_a_waiting_click_goes_before_the_next_queued_job(client, server, busy_device):
    """H2: an interactive click does not wait for the whole queue, only for the job that holds the device."""
    session = client.upload(make_volume(seed=3))["id"]
    queued = [client.submit(session, "classification", "test-cls")["id"] for _ in range(3)]
    results = []
    clicked = []
    clicker = threading.Thread(target=lambda: (_click_request(client, session, 60, results), clicked.append(
        time.time())))
    clicker.start()
    gate = server.app.state.service.device_gate
    deadline = time.monotonic() + 10
    while gate.waiting_clicks < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    busy_device.set()          # the "running job" ends: the click goes first
    clicker.join(30)
    assert results == [200]
    finished = [client.wait(job)["finished"] for job in queued]
    assert min(finished) > clicked[0] - 0.5, (finished, clicked)


# ------------------------------------------------------------------ M1: the network grid is bounded at submit

def test_a_tiny_upload_with_a_huge_spacing_is_refused_before_it_runs(client):
    """M1 (E1-E4): 16^3 voxels with 150 mm spacing would become ~3.4e9 voxels on a 1 mm model grid: 413 at submit
    and at click time, with the numbers, and nothing queued."""
    session = client.upload(make_volume((16, 16, 16), seed=4), header=geometry_header(spacing=(150, 150, 150)))["id"]
    detail = client.refused("POST", f"/sessions/{session}/jobs", 413, "--max-network-voxels",
                            json_body={"task": "segmentation", "model": "test-seg-spaced"})
    assert "2400 x 2400 x 2400" in detail and "13,824,000,000 voxels" in detail and "600,000" in detail
    client.refused("POST", f"/sessions/{session}/click", 413, "--max-network-voxels",
                   json_body={"model": "test-seg-spaced", "positive": [[10.0, 10.0, 10.0]]})
    fine = client.upload(make_volume((16, 16, 16), seed=4), header=geometry_header(spacing=(2, 2, 2)))["id"]
    assert client.wait(client.submit(fine, "segmentation", "test-seg-spaced")["id"])["state"] == "done"


def test_too_many_tiles_are_refused_at_submit(models_dir):
    """M1: the tile count (overlap included) is bounded too."""
    with start_server(models_dir, max_tiles=8) as running:
        client = Client(running.url)
        session = client.upload(make_volume((32, 64, 64), seed=5))["id"]     # 3 x 3 tiles of 32^3 at overlap 0.5
        assert client.submit(session, "segmentation", "test-seg", overlap=0.0)["state"] == "queued"   # 4 tiles
        detail = client.refused("POST", f"/sessions/{session}/jobs", 413, "--max-tiles",
                                json_body={"task": "segmentation", "model": "test-seg", "options": {"overlap": 0.9}})
        assert "would need 144 sliding-window tiles" in detail and "limit of 8" in detail   # 1 x 12 x 12


@pytest.mark.parametrize("patch", [16, 32, 48])
def test_tile_count_equals_the_sliding_window_tiles(patch):
    for size in range(1, 200, 7):
        for overlap in (0.0, 0.25, 0.5, 0.8, 0.95, 0.99):
            assert tile_count(size, patch, overlap) == len(tile_starts(size, patch, overlap)), (size, overlap)


# -------------------------------------------------------------------------------- M2: session memory budget

def test_sessions_have_a_memory_budget(models_dir):
    """M2 (D17, D18, H-1): beyond the budget an upload gets 507 with the figures, before its voxels are read."""
    one = 20 * 24 * 28 * 4
    with start_server(models_dir, max_session_bytes=3 * one, session_evict_idle=3600) as running:
        client = Client(running.url)
        ids = [client.upload(make_volume(seed=s))["id"] for s in range(3)]
        detail = client.refused("POST", "/sessions?shape=20,24,28&dtype=int16", 507, "session memory is full",
                                body=make_volume(seed=9).tobytes(), headers={"X-Geometry": geometry_header()})
        assert "--max-session-memory-gb" in detail and "DELETE /sessions" in detail
        bomb = _gzip_bomb_nrrd((60, 60, 60))          # 216k voxels = 864 KB as float32, a few KB as a file
        assert len(bomb) < 4000
        client.refused("POST", "/sessions/file?filename=bomb.nrrd", 507, "session memory", body=bomb)
        client.json("DELETE", f"/sessions/{ids[0]}", expect=204)
        client.upload(make_volume(seed=9))
        memory = client.json("GET", "/environment")["memory"]
        assert memory["sessions"] == 3 and memory["session_bytes"] == 3 * one
        assert memory["session_budget_bytes"] == 3 * one and memory["session_reserved_bytes"] == 0


def test_idle_sessions_are_evicted_least_recently_used_first(models_dir):
    one = 20 * 24 * 28 * 4
    with start_server(models_dir, max_session_bytes=2 * one, session_evict_idle=0) as running:
        client = Client(running.url)
        first, second = (client.upload(make_volume(seed=s))["id"] for s in range(2))
        client.json("GET", f"/sessions/{first}")            # used last: the other one goes first
        third = client.upload(make_volume(seed=3))["id"]
        client.refused("GET", f"/sessions/{second}", 404, "removed to make room")
        assert client.json("GET", f"/sessions/{first}")["id"] == first and client.json("GET", f"/sessions/{third}")
        too_big = client.refused("POST", "/sessions?shape=40,48,56&dtype=int16", 507, "whole session memory",
                                 body=bytes(40 * 48 * 56 * 2), headers={"X-Geometry": geometry_header()})
        assert "--max-session-memory-gb" in too_big


def _gzip_bomb_nrrd(shape):
    data = np.zeros(shape, np.uint8)
    data[1, 2, 3] = 1
    head = (f"NRRD0004\ntype: uchar\ndimension: 3\nspace: left-posterior-superior\nsizes: {shape[2]} {shape[1]} "
            f"{shape[0]}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: gzip\n\n").encode()
    return head + gzip.compress(data.tobytes(), 9)


# ------------------------------------------------------- M3: upload buffers fill as bytes arrive; stalls end

@pytest.mark.skipif(not LINUX, reason="reads /proc/self/status")
def test_a_stalled_upload_costs_what_it_sent_and_times_out(models_dir):
    """M3 (B34): three uploads declaring 96 MB each that send 1 KB and stall raise RSS by much less than they
    declare, and are dropped with 408 after the upload timeout."""
    size = 96 * 2**20
    with start_server(models_dir, max_upload_bytes=4 * size, max_voxels=10**9, upload_timeout=1.5) as running:
        client = Client(running.url)
        before = rss()
        socks = [raw_socket(client, upload_head(client, "shape=96,1024,256&dtype=float32", size), bytes(1024))
                 for _ in range(3)]
        time.sleep(0.6)
        grown = rss() - before
        started = time.perf_counter()
        answers = [read_answer(sock) for sock in socks]
        waited = time.perf_counter() - started
        for sock in socks:
            sock.close()
        assert grown < 40 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB for 3 KB received"
        assert [status for status, _ in answers] == [408] * 3 and waited < 5
        assert "sent nothing for 1.5 s" in answers[0][1]["detail"]
        assert client.json("GET", "/health", auth=False) == {"status": "ok"}
        assert client.upload(make_volume(seed=6))["shape"] == [1, 20, 24, 28]


def test_in_flight_upload_bytes_are_bounded(models_dir):
    """M3: the bodies of uploads in progress are bounded together: beyond the bound a new upload is answered 503
    at once instead of buffering more."""
    size = 20 * 24 * 28 * 2
    with start_server(models_dir, max_inflight_upload_bytes=int(1.5 * size), upload_timeout=10) as running:
        client = Client(running.url)
        stalled = raw_socket(client, upload_head(client, "shape=20,24,28&dtype=int16", size), bytes(100))
        time.sleep(0.3)
        started = time.perf_counter()
        detail = client.refused("POST", "/sessions?shape=20,24,28&dtype=int16", 503, "in progress",
                                body=make_volume().tobytes(), headers={"X-Geometry": geometry_header()})
        assert time.perf_counter() - started < 1.0 and "try again" in detail
        stalled.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, _, _ = client.call("POST", "/sessions?shape=20,24,28&dtype=int16", body=make_volume().tobytes(),
                                       headers={"X-Geometry": geometry_header()})
            if status == 201:
                break
            time.sleep(0.1)
        assert status == 201


def test_file_uploads_go_to_the_servers_own_temporary_folder_and_time_out(models_dir, tmp_path):
    """M3 and L5: a stalled file upload lies in the per-server folder while it lasts, and is removed after 408."""
    with start_server(models_dir, upload_timeout=1.0, scratch_root=tmp_path) as running:
        client = Client(running.url)
        scratch = running.app.state.service.scratch.path
        assert scratch.parent.parent == tmp_path
        sock = raw_socket(client, f"POST /sessions/file?filename=ct.nrrd HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                  f"Bearer {TOKEN}\r\nContent-Length: 5000\r\n\r\n", b"NRRD0004\n")
        time.sleep(0.4)
        assert [p.name.startswith("upload-") for p in scratch.iterdir() if p.name != LOCK_NAME] == [True]
        status, answer = read_answer(sock)
        sock.close()
        assert status == 408 and "sent nothing" in answer["detail"]
        assert [p.name for p in scratch.iterdir()] == [LOCK_NAME]
    assert not scratch.exists()        # removed at shutdown


# ---------------------------------------------------------------- M4: serve gives freed memory back to the OS

@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="glibc malloc_trim and /proc")
def test_nnmamba_serve_returns_a_memory_peak_to_the_os(tmp_path):
    """M4 (F20): `nnmamba serve` (which keeps freed memory for speed while working) falls back to its resident
    size after a 256 MB upload is deleted."""
    from nnmamba.client_local import LocalServer

    (tmp_path / "models").mkdir()
    with LocalServer(device="cpu", models_dir=tmp_path / "models",
                     extra_args=["--max-upload-mb", "300", "--max-voxels", "1e8"]) as local:
        client = local.client(timeout=120)
        small = client.upload_volume(make_volume(seed=7), GEOMETRY)
        client.delete_session(small)
        time.sleep(1.0)
        baseline = client.environment()["memory"]["process_rss_bytes"]
        big = np.random.default_rng(0).normal(size=(64, 1024, 1024)).astype(np.float32)   # 256 MB
        session = client.upload_volume(big, GEOMETRY)
        del big
        peak = client.environment()["memory"]["process_rss_bytes"]
        client.delete_session(session)
        deadline, after = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            after = client.environment()["memory"]["process_rss_bytes"]
            if after < baseline + 64 * 2**20:
                break
            time.sleep(0.3)
        assert peak > baseline + 200 * 2**20
        assert after < baseline + 64 * 2**20, (baseline / 2**20, peak / 2**20, after / 2**20)


# ------------------------------------------------------------------ M5: JSON bodies are bounded before parsing

def test_large_json_bodies_are_refused_before_parsing(client):
    """M5 (C27): a 33 MB click body was parsed on the event loop for 4.6 s; now 413 at once, by Content-Length or
    by counting a streamed body, and /health never waits."""
    session = client.upload(make_volume(seed=8))["id"]

    def headers_only(path, length, auth=True):
        token = f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
        sock = raw_socket(client, f"POST {path} HTTP/1.1\r\nHost: x\r\n{token}Content-Type: application/json\r\n"
                                  f"Content-Length: {length}\r\n\r\n")
        try:
            return read_answer(sock)
        finally:
            sock.close()

    started = time.perf_counter()
    status, answer = headers_only(f"/sessions/{session}/click", 33_000_000)      # nothing of the body was sent
    assert status == 413 and "larger than 64 KiB" in answer["detail"] and time.perf_counter() - started < 1.0
    assert headers_only(f"/sessions/{session}/jobs", 100_000)[0] == 413
    assert headers_only(f"/sessions/{session}/click", 33_000_000, auth=False)[0] == 401     # the token first
    assert client.json("POST", f"/sessions/{session}/click", json_body={"model": "test-seg", "positive": [
        [10.0, 10.0, 10.0]], "negative": [[1.0, 1.0, float(n)] for n in range(2, 18)]})["label"] >= 0
    sock = raw_socket(client, f"POST /sessions/{session}/click HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                              f"{TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" + b"1," * 50_000
    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    status, answer = read_answer(sock)
    sock.close()
    assert status == 413 and "64 KiB" in answer["detail"]


def test_content_length_with_transfer_encoding_is_refused(client):
    """Informational (B36): RFC 9112 lets a server refuse a request framed both ways; this one does."""
    sock = raw_socket(client, f"POST /sessions/x/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                              "Content-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
                              "\r\n2\r\n{}\r\n0\r\n\r\n")
    status, answer = read_answer(sock)
    sock.close()
    assert status == 400 and "Transfer-Encoding" in answer["detail"]


# ------------------------------------------------------------------------------------------------ low findings

def test_deleting_a_session_cancels_its_jobs(client, busy_device):
    """L1 (F6): queued jobs of a deleted session no longer run."""
    session = client.upload(make_volume(seed=10))["id"]
    other = client.upload(make_volume(seed=11))["id"]
    running = client.submit(session, "classification", "test-cls")["id"]
    client.wait(running, until=("running",))          # taken by the worker, waiting for the device
    queued = [client.submit(session, "classification", "test-cls")["id"] for _ in range(4)]
    kept = client.submit(other, "classification", "test-cls")["id"]
    client.json("DELETE", f"/sessions/{session}", expect=204)
    for job in queued:
        info = client.json("GET", f"/jobs/{job}")
        assert info["state"] == "cancelled" and "session was deleted" in info["message"]
    assert client.json("GET", f"/jobs/{running}")["message"] == "cancelling"
    busy_device.set()
    assert client.wait(running)["state"] == "cancelled"
    assert client.wait(kept)["state"] == "done"


@pytest.mark.parametrize("direction, why", [
    ((1, 0, 0, 0.9, 1, 0, 0, 0, 1), "not a rotation"),             # the review's shear 0.9
    ((1, 0.6, 0, 0, 0.8, 0, 0, 0, 1), "not perpendicular"),         # unit axes 53 degrees apart
    ((2, 0, 0, 0, 2, 0, 0, 0, 2), "lengths"),                        # 2 x identity
    ((0.0126, 0, 0, 0, 0.0126, 0, 0, 0, 0.0126), "lengths"),         # det 2e-6
])
def test_non_orthonormal_directions_are_refused(client, direction, why):
    """L2 (B25): a sheared or scaled direction matrix would give results a wrong geometry."""
    status, _, answer = client.call("POST", "/sessions?shape=20,24,28&dtype=int16", body=make_volume().tobytes(),
                                    headers={"X-Geometry": geometry_header(direction=direction)})
    detail = json.loads(answer)["detail"]
    assert status == 422 and "not a rotation" in detail and why in detail
    rotation = Geometry.create((0, 0, 0), (1, 1, 1), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]).direction
    assert direction_problem(rotation) is None and direction_problem(np.diag([1, 1, -1])) is None
    assert direction_problem(np.eye(3) + 2e-4) is None                 # ITK's tolerance: header rounding passes


def test_a_sheared_image_file_is_refused(client):
    body = nrrd_header("space: left-posterior-superior", "space directions: (1,0,0) (0.9,1,0) (0,0,1)",
                       "space origin: (0,0,0)", sizes="8 8 8") + b"\n" + make_volume((8, 8, 8)).tobytes()
    detail = client.refused("POST", "/sessions/file?filename=shear.nrrd", 422, "not a rotation", body=body)
    assert "sheared" in detail


def test_only_real_devices_are_accepted(client):
    """L3 (C14): 'meta' and other torch device types are refused before a job is queued."""
    session = client.upload(make_volume(seed=12))["id"]
    for device in ("meta", "xla", "cuda:0x", "cpu; rm -rf /", "privateuseone"):
        client.refused("POST", f"/sessions/{session}/jobs", 422, "cpu, cuda, cuda:N or mps",
                       json_body={"task": "classification", "model": "test-cls", "options": {"device": device}})
    assert client.submit(session, "classification", "test-cls", device="cpu")["state"] == "queued"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_token_file_is_never_readable_by_others(tmp_path, monkeypatch):
    """L4 (A12): under umask 000 the temporary file is 0600 from its creation on, not only after a chmod."""
    seen = []
    real_replace = os.replace

    def replace(source, target):
        seen.append(stat.S_IMODE(os.stat(source).st_mode))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    real_open = os.open

    def checked_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT and "tmp" in str(path):
            seen.append(mode)
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", checked_open)
    old = os.umask(0)
    try:
        path = write_token_file("abc-123", tmp_path / "shared" / "token")
    finally:
        os.umask(old)
    assert seen == [0o600, 0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "abc-123\n"
    assert [p.name for p in path.parent.iterdir()] == ["token"]


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_partial_uploads_of_a_crashed_server_are_removed_at_start(tmp_path):
    """L5 (F12): a folder whose server is gone (no lock held) is removed at the next start; a running server's
    folder (lock held) is kept."""
    first = ScratchFolder(tmp_path)
    (first.path / "upload-partial.nrrd").write_bytes(b"x" * 300_000)
    os.close(first._lock)                     # as if killed: the kernel drops the lock
    first._lock = None
    alive = ScratchFolder(tmp_path)
    (alive.path / "upload-in-progress.nrrd").write_bytes(b"y")
    second = ScratchFolder(tmp_path)
    assert not first.path.exists() and alive.swept == [first.path] and second.swept == []
    assert (alive.path / "upload-in-progress.nrrd").exists()
    assert _try_lock(alive.path / LOCK_NAME) is None
    assert stat.S_IMODE(second.path.parent.stat().st_mode) == 0o700
    alive.cleanup()
    second.cleanup()
    assert not alive.path.exists() and not second.path.exists()


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="kill -9 and /proc")
def test_kill_9_mid_upload_then_restart_leaves_no_partial_upload(tmp_path):
    """L5 and L9 (F12, F13) with real processes: kill -9 during a file upload, restart on the same port: no partial
    file is left, and an old session's 404 says the server restarted."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, NNMAMBA_SERVER_TOKEN=TOKEN, TMPDIR=str(scratch))
    (tmp_path / "models").mkdir()

    def serve(port):
        process = subprocess.Popen([sys.executable, "-m", "nnmamba", "serve", "--port", str(port), "--device", "cpu",
                                    "--models-dir", str(tmp_path / "models")], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=env, text=True)
        line = process.stdout.readline()
        return process, line.split(" on ")[1].split()[0]

    process, url = serve(0)
    try:
        client = Client(url)
        session = client.upload(make_volume(seed=13))["id"]
        sock = raw_socket(client, f"POST /sessions/file?filename=ct.nrrd HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                  f"Bearer {TOKEN}\r\nContent-Length: 600000\r\n\r\n", b"NRRD0004\n" + bytes(300_000))
        deadline = time.monotonic() + 10
        while not list(scratch.rglob("upload-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(scratch.rglob("upload-*"))) == 1
        process.kill()
        process.wait(10)
        sock.close()
        process, url = serve(client.port)
        assert not list(scratch.rglob("upload-*"))
        detail = client.refused("GET", f"/sessions/{session}", 404, "earlier run of this server")
        status, headers, _ = client.call("GET", "/version")
        assert headers["X-NNMamba-Boot"] in detail
    finally:
        process.kill()
        process.wait(10)


def test_a_client_disconnect_is_one_info_line(client, caplog):
    """L6 (B33): a client that goes away mid-upload is not an 'Unexpected error' with a traceback."""
    size = 20 * 24 * 28 * 2
    with caplog.at_level(logging.INFO, logger="nnmamba.server"):
        sock = raw_socket(client, upload_head(client, "shape=20,24,28&dtype=int16", size), bytes(500))
        time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + 5
        while not any("disconnected" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    records = [r for r in caplog.records if r.name == "nnmamba.server"]
    assert [r.levelno for r in records if "disconnected" in r.getMessage()] == [logging.INFO]
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert client.upload(make_volume(seed=14))["shape"] == [1, 20, 24, 28]


def test_internal_details_do_not_reach_clients(client, server, models_dir, monkeypatch, tmp_path):
    """L7 (C14, D12, H-4): an unexpected exception's text, ITK's build paths and package paths stay in the log."""
    import nnmamba.tasks

    def broken(*args, **kwargs):
        raise RuntimeError("secret /opt/build/itkMetaImageIO.cxx:490")

    monkeypatch.setattr(nnmamba.tasks, "classify_volume", broken)
    session = client.upload(make_volume(seed=15))["id"]
    failed = client.wait(client.submit(session, "classification", "test-cls")["id"])
    assert failed["state"] == "failed" and "secret" not in failed["error"] and ".cxx" not in failed["error"]
    assert failed["error"].startswith("Internal error") and failed["id"] in failed["error"]
    monkeypatch.undo()
    write_image(tmp_path / "ct.nrrd", make_volume(seed=15), GEOMETRY, compress=True)
    damaged = (tmp_path / "ct.nrrd").read_bytes()[:-200]
    detail = client.refused("POST", "/sessions/file?filename=ct.nrrd", 422, "could not be read", body=damaged)
    assert ".cxx" not in detail and str(server.app.state.service.scratch.path) not in detail and "/" not in detail
    for model in client.json("GET", "/models"):
        assert not model["where"].startswith("/") and str(models_dir) not in model["where"]
    assert "Not enough memory" in _failure_message(MemoryError(), Job("segmentation", "m", "s", {"device": "cpu"}))
    assert "GPU" not in _failure_message(MemoryError(), Job("segmentation", "m", "s", {"device": "cpu"}))
    assert "GPU memory" in _failure_message(MemoryError(), Job("segmentation", "m", "s", {"device": "cuda:0"}))


def test_broken_weights_name_the_model_not_its_path(models_dir, tmp_path):
    broken = segmentation_package(tmp_path / "models" / "test-broken", model_id="test-broken")
    weights = broken.root / broken.meta["weights"]["file"]
    weights.write_bytes(weights.read_bytes()[:-16] + bytes(16))
    with start_server(tmp_path / "models") as running:
        client = Client(running.url)
        session = client.upload(make_volume(seed=16))["id"]
        failed = client.wait(client.submit(session, "segmentation", "test-broken")["id"])
        assert failed["state"] == "failed" and "modified or is corrupt" in failed["error"]
        assert str(tmp_path) not in failed["error"] and "package 'test-broken'" in failed["error"]


def test_a_point_both_positive_and_negative_is_refused(client):
    """L8 (C23): the same voxel cannot be wanted and unwanted."""
    session = client.upload(make_volume(seed=17))["id"]
    point = [10.0, 10.0, 10.0]
    detail = client.refused("POST", f"/sessions/{session}/click", 422, "both a positive and a negative",
                            json_body={"model": "test-seg", "positive": [point], "negative": [[10.2, 9.9, 10.1]]})
    assert "[10.0, 10.0, 10.0]" in detail
    answer = client.json("POST", f"/sessions/{session}/click", json_body={"model": "test-seg", "positive": [point],
                                                                         "negative": [[3.0, 3.0, 3.0]]})
    assert base64.b64decode(answer["mask"])


def test_404s_and_version_tell_a_restart(models_dir):
    """L9 (F13): a boot id in /version (X-NNMamba-Boot) and in every 404, so that a client can say "the server
    restarted; upload again" instead of blaming expiry."""
    boots = []
    for _ in range(2):
        with start_server(models_dir) as running:
            client = Client(running.url)
            status, headers, body = client.call("GET", "/version")
            boots.append(headers["X-NNMamba-Boot"])
            assert json.loads(body)["api"] == 1
            for path in ("/sessions/0123456789abcdef", "/jobs/0123456789abcdef"):
                detail = client.refused("GET", path, 404, "earlier run of this server")
                assert boots[-1] in detail
            assert client.json("GET", "/environment")["server"]["boot"] == boots[-1]
            assert len(client.refused("GET", "/jobs/" + "a" * 5000, 404, "no job")) < 1000   # C28: not echoed whole
    assert boots[0] != boots[1]


def test_a_cancel_racing_the_end_of_a_job_is_decided_once():
    """L10: "cancelling" is answered only if the job then ends cancelled; a job that ended first answers 409."""
    for index in range(200):
        returning = threading.Event()

        def runner(job, returning=returning, pause=0.0005 * (index % 3)):
            returning.set()
            time.sleep(pause)
            return "result"

        queue = JobQueue(runner, ttl=60)
        job = queue.submit(Job("classification", "m", "s", {}))
        returning.wait(5)
        try:
            answer = queue.cancel(job.id)
        except ServiceError as error:
            answer = error.status
        deadline = time.monotonic() + 5
        while job.state not in ("done", "cancelled", "failed") and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(0.002)
        queue.stop()
        if answer == "cancelling":
            assert job.state == "cancelled" and job.result is None, (index, job.state, job.message)
        else:
            assert answer == 409 and job.state == "done" and job.message == "done", (index, answer, job.state)


def test_a_click_finishing_after_its_session_was_deleted_keeps_no_state(client, server):
    """L10 (H-3): the click cache does not keep an entry for a session deleted while its click ran."""
    service = server.app.state.service
    session = client.upload(make_volume(seed=18))["id"]
    plan = service.prepare_click(session, "test-seg", [[10.0, 10.0, 10.0]], [], "LPS")
    service.delete_session(session)
    try:
        with service.device_gate.job():
            service.run_click(plan)
    finally:
        service.end_click(plan)
    assert not [key for key in service.clicks._entries if key[0] == session]


def test_the_numba_cache_goes_to_a_user_cache_folder(tmp_path):
    """L11 (G6): compiled kernels are cached under the user's cache folder, never in the installed package."""
    pytest.importorskip("numba")
    code = ("import numba; from nnmamba.ssm.numba_kernel import use_user_cache_dir; folder = use_user_cache_dir(); "
            "from nnmamba.ssm._numba_scan import fused_scan; print(folder); print(fused_scan._cache._cache_path)")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    folder, cache_path = done.stdout.split()
    assert Path(folder) == tmp_path / "cache" / "nnmamba" / "numba"
    assert Path(cache_path).is_relative_to(Path(folder)) and "site-packages" not in cache_path
    package = Path(uploads.__file__).resolve().parents[1]
    assert not Path(cache_path).resolve().is_relative_to(package)


# ------------------------------------------------------------------------------------------------- informational

def test_head_health_answers_without_a_token(client):
    status, _, body = client.call("HEAD", "/health", auth=False)
    assert status == 200 and body == b""
    status, _, _ = client.call("HEAD", "/version", auth=False)
    assert status == 401


def test_serve_exposes_the_limits(capsys):
    from nnmamba.cli import build_parser

    args = build_parser().parse_args(["serve", "--max-queued-jobs", "5", "--click-wait", "20", "--max-tiles", "100",
                                      "--max-session-memory-gb", "1.5", "--max-waiting-clicks", "4",
                                      "--max-network-voxels", "2e7", "--upload-timeout", "12"])
    from nnmamba.server.main import settings_from_args

    args.token = "abc-123"
    settings, _ = settings_from_args(args)
    assert (settings.max_queued_jobs, settings.click_wait, settings.max_tiles, settings.max_waiting_clicks,
            settings.max_network_voxels, settings.upload_timeout) == (5, 20.0, 100, 4, 20_000_000, 12.0)
    assert settings.max_session_bytes == int(1.5 * 2**30)
    args.device = "meta"
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or mps"):
        settings_from_args(args)


def test_uploads_check_self_contained_directly(tmp_path):
    """The header checks on their own, for the spellings the HTTP tests do not cover."""
    cases = {
        "ok.nrrd": (nrrd_header("# c", "space: left-posterior-superior", "Segment0_ID:=x: y") + b"\n" + bytes(128),
                    None),
        "crlf.nrrd": (nrrd_header().replace(b"\n", b"\r\n") + b"\r\n" + bytes(128), None),
        "cr.nrrd": (nrrd_header("# x\rdata file: /etc/passwd") + b"\n" + bytes(128), "carriage return"),
        "unknown.nrrd": (nrrd_header("colour: red") + b"\n", "not a known field"),
        "noend.nrrd": (nrrd_header("# only a header"), "does not end"),
        "ok.mha": (b"ObjectType = Image\nNDims = 3\nElementDataFile = LOCAL\n" + bytes(128), None),
        "local2.mha": (b"NDims: 3\nElementDataFile :  Local\r\n" + bytes(8), None),
        "nokey.mha": (b"NDims = 3\nElementDataFile\n= /etc/passwd\n", "not 'Key = value'"),
        "nolocal.mha": (b"NDims = 3\nElementDataFile = LOCAL junk\n", "separate data file"),
    }
    for name, (data, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        suffix = uploads.file_suffix(name)
        if problem is None:
            uploads.check_self_contained(path, suffix, name)
        else:
            with pytest.raises(ServiceError, match=problem):
                uploads.check_self_contained(path, suffix, name)
