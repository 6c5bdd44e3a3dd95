"""`nnmamba serve`: a real server on a free loopback port, real model packages (random weights), plain urllib.

Every refusal must be a 4xx with a one-sentence ``detail``, and the server must keep answering afterwards.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, settings  # noqa: E402
from raw_http import RawHTTP  # noqa: E402

from nnmamba import __version__  # noqa: E402
from nnmamba.formats import read_landmarks, read_segmentation  # noqa: E402
from nnmamba.geometry import Geometry, lps_to_ras  # noqa: E402
from nnmamba.imaging import volume_from_array, write_image  # noqa: E402
from nnmamba.modelpkg import ModelPackage  # noqa: E402
from nnmamba.server.auth import api_of  # noqa: E402
from nnmamba.server.main import BackgroundServer  # noqa: E402
from nnmamba.server.settings import ServerSettings, resolve_token  # noqa: E402
from nnmamba.tasks import ClickSession, classify_volume, segment_volume  # noqa: E402

from model_packages import classification_package, landmark_package, segmentation_package  # noqa: E402

try:
    import schemathesis
except ImportError:  # the fuzz test is skipped; everything else runs
    schemathesis = None

TOKEN = "test-token-0123456789abcdefghijklmnop"
GEOMETRY = Geometry.create((-12.5, 30.0, 7.25), (0.8, 0.9, 1.2), [[1, 0, 0], [0, -1, 0], [0, 0, 1]])
UNAUTHORIZED = b'{"detail":"Missing or invalid token."}'


# ------------------------------------------------------------------------------------------------------ helpers

def make_volume(shape=(20, 24, 28), seed=0, dtype=np.int16):
    """A smooth blob on noise: something the random networks split into several labels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    blob = 800 * np.exp(-4 * (grid ** 2).sum(0)) + rng.normal(0, 60, shape)
    return blob.astype(dtype)


def geometry_header(geometry=GEOMETRY):
    return json.dumps({"origin": geometry.origin.tolist(), "spacing": geometry.spacing.tolist(),
                       "direction": geometry.direction.reshape(-1).tolist()})


class Client(RawHTTP):
    """RawHTTP with this file's token and its refusal and upload checks."""

    def __init__(self, url, token=TOKEN):
        super().__init__(url, token)

    def refused(self, method, path, status, contains="", **kwargs):
        """A refusal: the status, a one-sentence detail (containing ``contains``), and the server still up."""
        answer = self.json(method, path, expect=status, **kwargs)
        assert set(answer) == {"detail"} and isinstance(answer["detail"], str), answer
        assert contains.lower() in answer["detail"].lower(), answer["detail"]
        assert self.json("GET", "/version") == {"nnmamba": __version__, "api": 1}
        return answer["detail"]

    def upload(self, array, geometry=GEOMETRY, name=None, expect=201):
        array = np.asarray(array)
        query = {"shape": ",".join(map(str, array.shape[-3:])), "dtype": array.dtype.name,
                 "channels": array.shape[0] if array.ndim == 4 else 1}
        if name:
            query["name"] = name
        return self.json("POST", "/sessions?" + urllib.parse.urlencode(query), expect=expect,
                         body=array.astype(array.dtype.newbyteorder("<")).tobytes(),
                         headers={"X-Geometry": geometry_header(geometry)})

    def submit(self, session_id, task, model, expect=202, **options):
        return self.json("POST", f"/sessions/{session_id}/jobs", expect=expect,
                         json_body={"task": task, "model": model, "options": options})

    def wait(self, job_id, timeout=60, until=("done", "failed", "cancelled")):
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("GET", f"/jobs/{job_id}")
            if job["state"] in until:
                return job
            assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s: {job}"
            time.sleep(0.02)


def raw_upload(client, query, body, headers=None):
    headers = {"X-Geometry": geometry_header(), **(headers or {})}
    return client.call("POST", "/sessions?" + query, body=body, headers=headers)


# ----------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    segmentation_package(folder / "test-seg")
    landmark_package(folder / "test-landmarks")
    classification_package(folder / "test-cls")
    broken = segmentation_package(folder / "test-broken", model_id="test-broken")
    weights = broken.root / broken.meta["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[-16:] = bytes(16)  # damaged after packaging: the sha256 no longer matches
    weights.write_bytes(bytes(data))
    return folder


def start_server(models_dir, **overrides):
    options = dict(token=TOKEN, host="127.0.0.1", port=0, device="cpu", models_dir=models_dir, session_ttl=600,
                   max_upload_bytes=2 * 2**20, max_voxels=400_000)
    options.update(overrides)
    return BackgroundServer(ServerSettings(**options))


@pytest.fixture(scope="module")
def server(models_dir):
    with start_server(models_dir) as running:
        yield running


@pytest.fixture
def client(server):
    return Client(server.url)


@pytest.fixture(scope="module")
def packages(models_dir):
    return {name: ModelPackage.open(models_dir / name) for name in ("test-seg", "test-landmarks", "test-cls")}


# --------------------------------------------------------------------------------------------------------- auth

def test_health_needs_no_token_and_says_nothing_else(client):
    status, _, body = client.call("GET", "/health", auth=False)
    assert status == 200 and json.loads(body) == {"status": "ok"}


@pytest.mark.parametrize("path", ["/version", "/models", "/openapi.json", "/docs", "/no/such/route",
                                  "/sessions/abc"])
@pytest.mark.parametrize("how", ["none", "wrong", "no scheme", "basic", "query", "x-token", "two headers"])
def test_every_endpoint_refuses_a_missing_or_misplaced_token_alike(client, path, how):
    headers, suffix = {}, ""
    if how == "wrong":
        headers["Authorization"] = f"Bearer {TOKEN}x"
    elif how == "no scheme":
        headers["Authorization"] = TOKEN
    elif how == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()
    elif how == "query":
        suffix = "?" + urllib.parse.urlencode({"token": TOKEN, "access_token": TOKEN})
    elif how == "x-token":
        headers["X-Token"] = TOKEN
    if how != "two headers":
        status, answer_headers, body = client.call("GET", path + suffix, headers=headers, auth=False)
    else:  # urllib cannot send a header twice: speak HTTP directly
        connection = http.client.HTTPConnection(client.url.split("//")[1], timeout=10)
        connection.putrequest("GET", path)
        connection.putheader("Authorization", f"Bearer {TOKEN}")
        connection.putheader("Authorization", "Bearer other")
        connection.endheaders()
        response = connection.getresponse()
        status, answer_headers, body = response.status, response.headers, response.read()
        connection.close()
    assert (status, body) == (401, UNAUTHORIZED)
    assert answer_headers["WWW-Authenticate"] == "Bearer"


def test_the_token_opens_everything_and_the_docs_page_is_off(client):
    schema = client.json("GET", "/openapi.json")
    assert "/sessions/{session_id}/jobs" in schema["paths"]
    client.refused("GET", "/docs", 404, "no endpoint")
    client.refused("GET", "/no/such/route", 404, "openapi")
    client.refused("PUT", "/version", 405, "not allowed")


def test_an_incompatible_client_gets_409_but_can_still_ask_the_version(client):
    assert client.json("GET", "/models", headers={"X-NNMamba-Client": "0.1.0"})
    assert client.json("GET", "/models", headers={"X-NNMamba-Client": "0.7.3"})  # same API 1
    detail = client.refused("GET", "/models", 409, "incompatible", headers={"X-NNMamba-Client": "nnmamba 0.1; api=2"})
    assert "0.1.0" in detail
    client.refused("GET", "/models", 409, "incompatible", headers={"X-NNMamba-Client": "0.0.9"})
    client.refused("GET", "/models", 409, "incompatible", headers={"X-NNMamba-Client": "garbage"})
    assert client.json("GET", "/version", headers={"X-NNMamba-Client": "9.0.0"})["api"] == 1
    assert (api_of("1.4.2"), api_of("0.1.0+local"), api_of("x; api=3")) == (1, 1, 3)


def test_token_file_is_private_and_an_operator_token_is_not_written(tmp_path, monkeypatch):
    monkeypatch.delenv("NNMAMBA_SERVER_TOKEN", raising=False)
    token, where = resolve_token(None, tmp_path / "sub" / "token")
    path = tmp_path / "sub" / "token"
    assert where == f"in {path}" and path.read_text().strip() == token and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token("my-token-123", None) == ("my-token-123", "from --token")
    monkeypatch.setenv("NNMAMBA_SERVER_TOKEN", "env-token-456")
    assert resolve_token(None, None) == ("env-token-456", "from NNMAMBA_SERVER_TOKEN")
    with pytest.raises(ValueError, match="visible ASCII"):
        resolve_token("two words", None)


# ------------------------------------------------------------------------------------------------------- models

def test_models_are_listed_and_found_by_id_only(client, models_dir):
    listed = {m["id"]: m for m in client.json("GET", "/models")}
    assert {"test-seg", "test-landmarks", "test-cls"} <= set(listed)
    assert listed["test-seg"]["task"] == "segmentation" and listed["test-seg"]["inputs"] == ["image 0"]
    assert listed["test-cls"]["where"] == "models/test-cls"   # never a path on the server's disk
    meta = client.json("GET", "/models/test-landmarks")
    assert meta["id"] == "test-landmarks" and meta["outputs"]["landmarks"][0]["name"] == "TCD1"
    client.refused("GET", "/models/nope", 404, "test-seg")  # the answer lists what is installed
    client.refused("GET", "/models/..test-seg", 404, "lowercase letters")      # ids only, never a path
    client.refused("GET", "/models/" + urllib.parse.quote(str(models_dir / "test-seg"), safe=""), 404)


# ------------------------------------------------------------------------------------------------------ uploads

def test_session_round_trip_keeps_shape_and_geometry(client):
    created = client.upload(make_volume(), name="knee")
    assert created["shape"] == [1, 20, 24, 28] and 590 < created["expires_in"] <= 600
    info = client.json("GET", f"/sessions/{created['id']}")
    assert info["name"] == "knee" and info["shape"] == [1, 20, 24, 28]
    np.testing.assert_allclose(info["geometry"]["origin"], GEOMETRY.origin)
    np.testing.assert_allclose(info["geometry"]["spacing"], GEOMETRY.spacing)
    np.testing.assert_allclose(info["geometry"]["direction"], GEOMETRY.direction.reshape(-1))
    status, _, body = client.call("DELETE", f"/sessions/{created['id']}")
    assert (status, body) == (204, b"")
    client.refused("GET", f"/sessions/{created['id']}", 404, "no session")
    client.refused("DELETE", f"/sessions/{created['id']}", 404, "no session")


def test_multichannel_float_upload(client):
    volume = np.stack([make_volume(seed=1), make_volume(seed=2)]).astype(np.float64)
    assert client.upload(volume)["shape"] == [2, 20, 24, 28]


GOOD = make_volume()
NAN = GOOD.astype(np.float32)
NAN[3, 4, 5] = np.nan


@pytest.mark.parametrize("query, body, headers, status, contains", [
    ("shape=20,24,28&dtype=int16", GOOD.tobytes()[:-10], {}, 422, "truncated"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes() + b"xx", {}, 422, "too long"),
    ("shape=20,24,28&dtype=complex64", GOOD.tobytes(), {}, 422, "dtype"),
    ("shape=20,24,28&dtype=float32", GOOD.tobytes(), {}, 422, "truncated"),  # wrong dtype for the bytes
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(), {"X-Geometry": ""}, 422, "missing"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(), {"X-Geometry": "garbage"}, 422, "not json"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(), {"X-Geometry": '{"origin": [0, 0, 0]}'}, 422, "exactly"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(),
     {"X-Geometry": '{"origin": [0, 0], "spacing": [1, 1, 1], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}'},
     422, "3 numbers"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(),
     {"X-Geometry": '{"origin": [0, 0, 0], "spacing": [1, 0, 1], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}'},
     422, "positive"),
    ("shape=20,24,28&dtype=int16", GOOD.tobytes(),
     {"X-Geometry": '{"origin": [0, 0, 0], "spacing": [1, 1, 1], "direction": [1, 0, 0, 1, 0, 0, 0, 0, 1]}'},
     422, "singular"),
    ("shape=480,28&dtype=int16", GOOD.tobytes(), {}, 422, "three sizes"),
    ("shape=1,20,24,28&dtype=int16", GOOD.tobytes(), {}, 422, "channels=C"),
    ("shape=20,24,x&dtype=int16", GOOD.tobytes(), {}, 422, "positive integers"),
    ("shape=1,24,560&dtype=int16", GOOD.tobytes(), {}, 422, "shorter than 2"),
    ("shape=20,24,28&dtype=int16&channels=0", GOOD.tobytes(), {}, 422, "channels"),
    ("shape=20,24,28&dtype=int16&channels=two", GOOD.tobytes(), {}, 422, "query parameter 'channels'"),
    ("dtype=int16", GOOD.tobytes(), {}, 422, "query parameter 'shape'"),
    ("shape=20,24,28&dtype=float32", NAN.tobytes(), {}, 422, "NaN"),
    ("shape=20,24,28&dtype=int16", np.full_like(GOOD, 7).tobytes(), {}, 422, "blank"),
    ("shape=2000,2000,2000&dtype=uint8", b"\0" * 100, {}, 413, "--max-voxels"),
    ("shape=60,80,80&dtype=float64", b"\0" * 100, {}, 413, "--max-upload-mb"),
])
def test_bad_uploads_are_refused_with_a_reason(client, query, body, headers, status, contains):
    status_got, _, answer = raw_upload(client, query, body, headers)
    assert status_got == status, answer
    assert contains.lower() in json.loads(answer)["detail"].lower()
    assert client.json("GET", "/version")["api"] == 1


def test_oversized_uploads_are_refused_before_the_body_is_read(client):
    """The answer comes while the client has sent headers only; waiting for the body would time out here."""
    host = client.url.split("//")[1]
    for query, length, status in (("shape=20,24,28&dtype=int16", 50 * 2**30, 413),       # over --max-upload-mb
                                  ("shape=500,500,500&dtype=int16", 250_000_000, 413),    # over --max-voxels
                                  ("shape=20,24,28&dtype=int16", 26_000, 422)):           # not the declared size
        connection = http.client.HTTPConnection(host, timeout=5)
        connection.putrequest("POST", "/sessions?" + query)
        for name, value in (("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(length)), ("X-Geometry", geometry_header())):
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == status and json.loads(response.read())["detail"]
        connection.close()
    assert client.json("GET", "/version")["api"] == 1


def test_image_file_upload(client, tmp_path):
    array = make_volume(seed=3)
    write_image(tmp_path / "ct.nii.gz", array, GEOMETRY)
    created = client.json("POST", "/sessions/file?filename=ct.nii.gz", expect=201,
                          body=(tmp_path / "ct.nii.gz").read_bytes())
    assert created["shape"] == [1, 20, 24, 28]
    info = client.json("GET", f"/sessions/{created['id']}")
    assert info["name"] == "ct.nii.gz"
    np.testing.assert_allclose(info["geometry"]["origin"], GEOMETRY.origin, atol=1e-4)
    client.refused("POST", "/sessions/file?filename=ct.png", 422, ".nii.gz", body=b"123")
    client.refused("POST", "/sessions/file?filename=ct.nii.gz", 422, "could not be read", body=b"not an image" * 40)
    client.refused("POST", "/sessions/file?filename=ct.nrrd", 422, "empty", body=b"")
    detached = (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
                b"data file: /etc/hostname\n\n")
    client.refused("POST", "/sessions/file?filename=x.nrrd", 422, "separate data file", body=detached)
    write_image(tmp_path / "big.nrrd", np.zeros((80, 80, 80), np.uint8), GEOMETRY)   # 512k voxels, tiny file
    client.refused("POST", "/sessions/file?filename=big.nrrd", 413, "--max-voxels",
                   body=(tmp_path / "big.nrrd").read_bytes())


# --------------------------------------------------------------------------------------------------------- jobs

def test_segmentation_job_gives_the_same_labels_as_a_direct_run(client, packages, tmp_path):
    array = make_volume(seed=4)
    session = client.upload(array, name="knee.nii.gz")
    job = client.submit(session["id"], "segmentation", "test-seg", overlap=0.5, mirroring=False, refine="none",
                        device="auto")
    assert job["state"] == "queued"
    done = client.wait(job["id"])
    assert done["state"] == "done" and done["progress"] == 1 and done["error"] is None
    assert done["session"] == session["id"] and done["model"] == "test-seg" and done["task"] == "segmentation"
    assert done["created"] <= done["started"] <= done["finished"]

    status, headers, data = client.call("GET", f"/jobs/{job['id']}/result")
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="knee.seg.nrrd"'
    (tmp_path / "knee.seg.nrrd").write_bytes(data)
    written = read_segmentation(tmp_path / "knee.seg.nrrd")
    expected = segment_volume(packages["test-seg"], volume_from_array(array, GEOMETRY), device="cpu")
    np.testing.assert_array_equal(written.labels, expected.labels)
    assert len(np.unique(expected.labels)) > 1
    np.testing.assert_allclose(written.geometry.origin, GEOMETRY.origin)
    document = client.json("GET", f"/jobs/{job['id']}/result?format=json")
    assert document["labels_shape"] == [20, 24, 28]
    assert [s["name"] for s in document["segments"]] == ["structure 1", "structure 2"]
    client.refused("GET", f"/jobs/{job['id']}/result?format=xml", 422, "format")
    client.refused("DELETE", f"/jobs/{job['id']}", 409, "already ended")


def test_landmark_and_classification_jobs(client, packages, tmp_path):
    array = make_volume(seed=5)
    session = client.upload(array)
    landmarks = client.submit(session["id"], "landmarks", "test-landmarks", refine="quadratic")
    classified = client.submit(session["id"], "classification", "test-cls")
    assert client.wait(landmarks["id"])["state"] == "done"
    status, headers, data = client.call("GET", f"/jobs/{landmarks['id']}/result")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    (tmp_path / "points.mrk.json").write_bytes(data)
    points = read_landmarks(tmp_path / "points.mrk.json")
    assert [p["label"] for p in points.points] == ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
    document = client.json("GET", f"/jobs/{landmarks['id']}/result?format=json")
    assert [line["name"] for line in document["lines"]] == ["TCD", "HDV", "ADV"]
    np.testing.assert_allclose(points.position("TCD1"), document["points"][0]["position"], atol=1e-6)

    assert client.wait(classified["id"])["state"] == "done"
    result = client.json("GET", f"/jobs/{classified['id']}/result?format=json")
    expected = classify_volume(packages["test-cls"], volume_from_array(array, GEOMETRY), device="cpu")
    np.testing.assert_allclose(result["probabilities"], expected.probabilities, rtol=1e-5)
    assert result["decision"] == expected.decision and result["model"]["id"] == "test-cls"
    status, _, data = client.call("GET", f"/jobs/{classified['id']}/result")
    assert status == 200 and json.loads(data)["classes"] == ["NC", "AD"]


def test_bad_job_requests_are_refused(client):
    session = client.upload(make_volume(seed=6))["id"]
    jobs = f"/sessions/{session}/jobs"
    client.refused("POST", jobs, 404, "no model", json_body={"task": "segmentation", "model": "nope"})
    client.refused("POST", jobs, 422, "classification model", json_body={"task": "segmentation", "model": "test-cls"})
    client.refused("POST", jobs, 422, "task", json_body={"task": "painting", "model": "test-seg"})
    client.refused("POST", jobs, 422, "overlpa",
                   json_body={"task": "segmentation", "model": "test-seg", "options": {"overlpa": 0.5}})
    client.refused("POST", jobs, 422, "overlap",
                   json_body={"task": "segmentation", "model": "test-seg", "options": {"overlap": 1.5}})
    client.refused("POST", jobs, 422, "device",
                   json_body={"task": "segmentation", "model": "test-seg", "options": {"device": "tpu"}})
    client.refused("POST", jobs, 422, "not valid json", json_body=b'{"task": "segmentation", ')
    client.refused("POST", "/sessions/nope/jobs", 404, "no session",
                   json_body={"task": "segmentation", "model": "test-seg"})
    two_channels = client.upload(np.stack([make_volume(seed=6), make_volume(seed=7)]))["id"]
    client.refused("POST", f"/sessions/{two_channels}/jobs", 422, "channels=1",
                   json_body={"task": "segmentation", "model": "test-seg"})
    client.refused("GET", "/jobs/nope", 404, "no job")
    client.refused("DELETE", "/jobs/nope", 404, "no job")
    client.refused("GET", "/jobs/nope/result", 404, "no job")


def test_a_failing_job_fails_alone(client):
    session = client.upload(make_volume(seed=8))["id"]
    broken = client.submit(session, "segmentation", "test-broken")
    good = client.submit(session, "classification", "test-cls")
    failed = client.wait(broken["id"])
    assert failed["state"] == "failed" and failed["progress"] == 0
    assert failed["error"].startswith("Model 'test-broken' cannot be loaded") and "modified or is corrupt" in \
        failed["error"]
    client.refused("GET", f"/jobs/{broken['id']}/result", 409, "failed")
    assert client.wait(good["id"])["state"] == "done"
    negative = client.upload(-np.abs(make_volume(seed=8)))["id"]     # a valid image, but the landmark window
    bad_volume = client.wait(client.submit(negative, "landmarks", "test-landmarks")["id"])   # needs voxels > 0
    assert bad_volume["state"] == "failed" and "no voxel above 0" in bad_volume["error"]
    assert client.wait(client.submit(negative, "classification", "test-cls")["id"])["state"] == "done"


def test_a_job_cancelled_mid_run_stops_and_has_no_result(client):
    session = client.upload(make_volume((32, 64, 64), seed=9))["id"]   # 9 tiles of 32^3
    running = client.submit(session, "segmentation", "test-seg")
    queued = client.submit(session, "segmentation", "test-seg")
    job = client.wait(running["id"], until=("running",))
    while job["progress"] == 0:
        assert job["state"] == "running", job
        job = client.json("GET", f"/jobs/{running['id']}")
        time.sleep(0.01)
    assert client.json("GET", f"/jobs/{queued['id']}")["message"] == "queued (1 job ahead)"
    assert client.json("DELETE", f"/jobs/{queued['id']}", expect=202) == {"state": "cancelled"}
    assert client.json("DELETE", f"/jobs/{running['id']}", expect=202) == {"state": "cancelling"}
    ended = client.wait(running["id"])
    assert ended["state"] == "cancelled" and ended["progress"] < 1 and ended["error"] is None
    assert client.json("GET", f"/jobs/{queued['id']}")["state"] == "cancelled"
    client.refused("GET", f"/jobs/{running['id']}/result", 409, "cancelled")
    client.refused("DELETE", f"/jobs/{running['id']}", 409, "already ended")


def test_models_stay_loaded_within_the_memory_budget(models_dir):
    with start_server(models_dir, model_memory_bytes=1) as tiny:   # room for one model at a time
        client = Client(tiny.url)
        session = client.upload(make_volume(seed=15))["id"]
        for task, model in (("classification", "test-cls"), ("landmarks", "test-landmarks")):
            assert client.wait(client.submit(session, task, model)["id"])["state"] == "done"
            memory = client.json("GET", "/environment")["memory"]
            assert [m["id"] for m in memory["models_loaded"]] == [model] and memory["model_bytes"] > 0
        assert memory["sessions"] == 1 and memory["session_bytes"] == 20 * 24 * 28 * 4
    with start_server(models_dir) as roomy:
        client = Client(roomy.url)
        session = client.upload(make_volume(seed=15))["id"]
        for task, model in (("classification", "test-cls"), ("landmarks", "test-landmarks")):
            assert client.wait(client.submit(session, task, model)["id"])["state"] == "done"
        loaded = client.json("GET", "/environment")["memory"]["models_loaded"]
        assert sorted(m["id"] for m in loaded) == ["test-cls", "test-landmarks"]


# ------------------------------------------------------------------------------------------------------- clicks

def test_click_matches_a_direct_click_session(client, packages):
    array = make_volume(seed=10)
    session = client.upload(array)["id"]
    point = GEOMETRY.index_to_lps([14, 12, 10])    # the blob's centre
    answer = client.json("POST", f"/sessions/{session}/click", json_body={"model": "test-seg", "positive": [
        point.tolist()]})
    expected = ClickSession(packages["test-seg"], volume_from_array(array, GEOMETRY), device="cpu").segment_at([point])
    assert answer["label"] == expected.label != 0 and answer["name"] == expected.name
    assert answer["offset"] == list(expected.offset) and answer["shape"] == list(expected.mask.shape)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(answer["mask"]), np.uint8))
    mask = bits[:np.prod(answer["shape"])].reshape(answer["shape"])
    np.testing.assert_array_equal(mask, expected.mask)
    again = client.json("POST", f"/sessions/{session}/click", json_body={
        "model": "test-seg", "positive": [lps_to_ras(point).tolist()], "coordinates": "RAS"})
    assert again["mask"] == answer["mask"] and again["network_passes"] == 0   # cached windows


def test_bad_clicks_are_refused(client):
    session = client.upload(make_volume(seed=11))["id"]
    click = f"/sessions/{session}/click"
    inside = GEOMETRY.index_to_lps([14, 12, 10]).tolist()
    client.refused("POST", click, 422, "outside the volume", json_body={"model": "test-seg",
                                                                       "positive": [[500.0, 500.0, 500.0]]})
    client.refused("POST", click, 422, "NaN", json_body=b'{"model": "test-seg", "positive": [[NaN, 1, 2]]}')
    client.refused("POST", click, 422, "at least one positive", json_body={"model": "test-seg", "positive": []})
    client.refused("POST", click, 422, "[x, y, z]", json_body={"model": "test-seg", "positive": [[1, 2]]})
    client.refused("POST", click, 422, "segmentation model", json_body={"model": "test-landmarks",
                                                                        "positive": [inside]})
    client.refused("POST", click, 404, "no model", json_body={"model": "nope", "positive": [inside]})
    client.refused("POST", "/sessions/nope/click", 404, "no session", json_body={"model": "test-seg",
                                                                                 "positive": [inside]})


# -------------------------------------------------------------------------------------------- concurrency, expiry

def test_two_clients_at_once_get_their_own_results(server, packages):
    arrays = [make_volume(seed=20), make_volume(seed=21)[:, ::-1].copy()]
    expected = [segment_volume(packages["test-seg"], volume_from_array(a, GEOMETRY), device="cpu").labels
                for a in arrays]
    results, errors = {}, []

    def work(index):
        try:
            client = Client(server.url)
            session = client.upload(arrays[index])["id"]
            job = client.submit(session, "segmentation", "test-seg")
            point = GEOMETRY.index_to_lps([14, 12, 10]).tolist()
            click = client.json("POST", f"/sessions/{session}/click", json_body={"model": "test-seg",
                                                                                 "positive": [point]})
            assert client.wait(job["id"])["state"] == "done"
            document = client.json("GET", f"/jobs/{job['id']}/result?format=json")
            status, _, data = client.call("GET", f"/jobs/{job['id']}/result")
            results[index] = (data, document, click)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for index in range(2):
        data, document, click = results[index]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "result.seg.nrrd")
            with open(path, "wb") as handle:
                handle.write(data)
            np.testing.assert_array_equal(read_segmentation(path).labels, expected[index])
        assert click["label"] != 0
    assert not np.array_equal(expected[0], expected[1])


def test_sessions_expire_when_asked_for(models_dir):
    with start_server(models_dir, session_ttl=0.5, sweep_interval=3600) as short:   # no sweep in this test
        client = Client(short.url)
        idle = client.upload(make_volume(seed=12))["id"]
        used = client.upload(make_volume(seed=13))["id"]
        time.sleep(0.3)
        assert client.json("GET", f"/sessions/{used}")["expires_in"] > 0.4       # touched: its timer restarts
        time.sleep(0.3)
        assert short.app.state.service.sessions.stats()["sessions"] == 2
        client.refused("GET", f"/sessions/{idle}", 404, "expired")
        client.json("GET", f"/sessions/{used}")
        time.sleep(0.6)
        client.refused("POST", f"/sessions/{used}/jobs", 404, "expired",
                       json_body={"task": "classification", "model": "test-cls"})


def test_expired_sessions_are_swept_without_being_asked_for(models_dir):
    with start_server(models_dir, session_ttl=0.2, sweep_interval=0.05) as short:
        client = Client(short.url)
        client.upload(make_volume(seed=14))
        sessions = short.app.state.service.sessions
        assert sessions.stats()["sessions"] == 1
        deadline = time.monotonic() + 5
        while sessions.stats()["sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sessions.stats() == {"sessions": 0, "session_bytes": 0}


def test_an_unexpected_error_is_a_generic_500_and_the_server_lives_on(server, client, monkeypatch):
    def broken():
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(server.app.state.service.models, "summaries", broken)  # stands for a bug in a route
    status, _, body = client.call("GET", "/models")
    assert status == 500
    assert b"secret" not in body and "server log" in json.loads(body)["detail"]
    monkeypatch.undo()
    assert client.json("GET", "/models")


# ---------------------------------------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_nnmamba_serve_prints_its_url_and_token_file(models_dir, tmp_path):
    token_file = tmp_path / "token"
    env = dict(os.environ, NNMAMBA_SERVER_TOKEN="")
    process = subprocess.Popen([sys.executable, "-m", "nnmamba", "serve", "--port", "0", "--device", "cpu",
                                "--token-file", str(token_file), "--models-dir", str(models_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip()
        prefix, _, rest = line.partition(" (token in ")
        assert prefix.startswith("nnmamba server on http://127.0.0.1:") and rest == f"{token_file})", line
        url = prefix.split(" on ")[1]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        client = Client(url, token=token_file.read_text().strip())
        assert client.json("GET", "/health", auth=False) == {"status": "ok"}
        assert "test-seg" in {m["id"] for m in client.json("GET", "/models")}
    finally:
        process.send_signal(signal.SIGINT)   # Ctrl-C: a graceful stop
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0 and "Application shutdown complete" in stderr, stderr


@pytest.mark.slow
def test_nnmamba_serve_without_fastapi_says_what_to_install():
    code = "import sys; sys.modules['fastapi'] = None; from nnmamba.cli import main; sys.exit(main(['serve']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and "pip install -e '.[server]' in the nnmamba" in done.stderr


# ---------------------------------------------------------------------------------------------- schemathesis

@pytest.mark.slow
@pytest.mark.skipif(schemathesis is None, reason="schemathesis is not installed (pip install -e '.[test]')")
def test_fuzzed_requests_never_get_a_5xx(server):
    """Valid and invalid requests generated from /openapi.json, a few per operation: every answer is < 500.
    (schemathesis' own pytest fixture loader does not work with pytest 9, so hypothesis drives it directly.)"""
    from hypothesis import given, strategies
    from schemathesis import GenerationMode

    auth = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=auth, timeout=10)
    failures, operations = [], [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14

    for operation in operations:
        cases = strategies.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                                  operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call(base_url=server.url, headers=auth, timeout=30)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.query, response.status_code,
                                 response.text[:200]))

        check()
    assert not failures, failures[:5]
    assert Client(server.url).json("GET", "/version")["api"] == 1
