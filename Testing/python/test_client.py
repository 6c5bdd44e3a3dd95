"""nnmamba.client against a real ``nnmamba serve`` on loopback (started by LocalServer), and against tiny
http.server stand-ins for what a healthy server never does (5xx, a wrong API version, a port that opens late)."""

import http.server
import json
import socket
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from nnmamba import __version__
from nnmamba.cli import main
from nnmamba.client import BackendError, BackendRequestError, Client
from nnmamba.client_local import LocalServer
from nnmamba.formats import read_landmarks, read_segmentation
from nnmamba.geometry import Geometry
from nnmamba.imaging import volume_from_array
from nnmamba.modelpkg import ModelPackage
from nnmamba.progress import Cancelled, CancelToken
from nnmamba.tasks import ClickSession, classify_volume, segment_volume

ANGLE = np.deg2rad(20)
GEOMETRY = Geometry.create((10.0, -4.0, 7.0), (0.8, 0.9, 2.0),
                           [[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def server(models):
    with LocalServer(device="cpu", models_dir=models["root"]) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server.client(timeout=20)


@pytest.fixture(scope="module")
def array():
    return np.random.default_rng(0).normal(100, 20, size=(18, 30, 27)).astype(np.int16)


def in_process(package, array):
    return ModelPackage.open(package.root), volume_from_array(array, GEOMETRY)


def test_segmentation_round_trip_matches_in_process(client, models, array, tmp_path):
    session = client.upload_volume(array, GEOMETRY, name="ct")
    job = client.wait(client.submit(session, "segmentation", "test-seg"), poll=0.05)
    assert job["state"] == "done" and job["progress"] == pytest.approx(1.0)
    path = tmp_path / "result.seg.nrrd"
    path.write_bytes(client.result_bytes(job["id"]))
    seg = read_segmentation(path)
    package, volume = in_process(models["seg"], array)
    expected = segment_volume(package, volume, device="cpu").labels
    np.testing.assert_array_equal(seg.labels, expected)
    np.testing.assert_allclose(seg.geometry.origin, GEOMETRY.origin, atol=1e-6)
    np.testing.assert_allclose(seg.geometry.spacing, GEOMETRY.spacing, atol=1e-6)
    np.testing.assert_allclose(seg.geometry.direction, GEOMETRY.direction, atol=1e-6)
    summary = client.result_json(job["id"])
    assert summary["labels_shape"] == [18, 30, 27]
    assert [s["name"] for s in summary["segments"]] == ["structure 1", "structure 2"]


def test_upload_with_slicer_ijk_to_ras_matrix_and_channels(client, array):
    session = client.upload_volume(np.stack([array, array // 2]), GEOMETRY.ijk_to_ras().tolist())
    info = client.session(session)
    assert info["shape"] == [2, 18, 30, 27]
    geometry = info["geometry"]
    np.testing.assert_allclose(geometry["origin"], GEOMETRY.origin, atol=1e-9)
    np.testing.assert_allclose(np.reshape(geometry["direction"], (3, 3)), GEOMETRY.direction, atol=1e-9)
    client.delete_session(session)
    with pytest.raises(BackendRequestError) as error:
        client.session(session)
    assert error.value.status == 404


def test_landmarks_and_classification_from_an_uploaded_file(client, models, array, tmp_path):
    image = sitk.GetImageFromArray(array)
    GEOMETRY.apply_to_sitk(image)
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))
    session = client.upload_file(tmp_path / "image.nrrd")
    landmarks = client.wait(client.submit(session, "landmarks", "test-landmarks"), poll=0.05)
    (tmp_path / "out.mrk.json").write_bytes(client.result_bytes(landmarks["id"]))
    assert [p["label"] for p in read_landmarks(tmp_path / "out.mrk.json").points] == [
        "TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
    assert [line["name"] for line in client.result_json(landmarks["id"])["lines"]] == ["TCD", "HDV", "ADV"]

    classified = client.wait(client.submit(session, "classification", "test-cls"), poll=0.05)
    document = client.result_json(classified["id"])
    package, volume = in_process(models["cls"], array)
    expected = classify_volume(package, volume, device="cpu")
    assert document["classes"] == ["NC", "AD"] and document["decision"] == expected.decision
    np.testing.assert_allclose(document["probabilities"], expected.probabilities, rtol=1e-4)


def test_click_matches_an_in_process_click_session(client, models, array):
    session = client.upload_volume(array, GEOMETRY)
    package, volume = in_process(models["seg"], array)
    local = ClickSession(package, volume, device="cpu")
    centre = GEOMETRY.index_to_lps([13, 15, 9])
    for point in (centre, centre + [1.0, -0.5, 0.0]):   # first click, then a cached second click
        expected = local.segment_at([point])
        answer = client.click(session, "test-seg", [point])
        assert answer["label"] == expected.label and answer["name"] == expected.name
        assert answer["offset"] == tuple(expected.offset)
        assert answer["mask"].dtype == np.uint8
        np.testing.assert_array_equal(answer["mask"], expected.mask)
    ras = client.click(session, "test-seg", [centre * [-1, -1, 1]], coordinates="RAS")
    np.testing.assert_array_equal(ras["mask"], local.segment_at([centre]).mask)


def test_server_description(client):
    assert client.version() == {"nnmamba": __version__, "api": 1}
    served = {m["id"]: m["task"] for m in client.models()}   # bundled models, if any, are served too
    assert {"test-seg": "segmentation", "test-landmarks": "landmarks", "test-cls": "classification"}.items() <= \
        served.items()
    assert client.model("test-seg")["outputs"]["labels"][0]["name"] == "structure 1"
    assert set(client.environment()["jobs"]) == {"queued", "running"}


def test_errors_carry_the_servers_message(client, array):
    session = client.upload_volume(array, GEOMETRY)
    with pytest.raises(BackendRequestError) as error:
        client.submit(session, "segmentation", "no-such-model")
    assert error.value.status == 404 and "no-such-model" in str(error.value)
    with pytest.raises(BackendRequestError) as error:
        client.click(session, "test-seg", [[500.0, 5.0, 25.0]])
    assert error.value.status == 422 and "outside the volume" in error.value.detail
    with pytest.raises(BackendRequestError, match="constant|blank"):
        client.upload_volume(np.full((4, 5, 6), 7, np.int16), GEOMETRY)


def test_a_wrong_token_is_refused_clearly(server):
    wrong = Client(server.url, token="not-the-token", retries=0)
    assert wrong.health() == {"status": "ok"}   # /health needs no token
    with pytest.raises(BackendError, match="refused the token") as error:
        wrong.models()
    assert error.value.status == 401


def test_cancel_through_wait_stops_the_job_on_the_server(client, array):
    big = np.random.default_rng(1).normal(100, 20, size=(48, 64, 64)).astype(np.int16)
    session = client.upload_volume(big, GEOMETRY)
    job_id = client.submit(session, "segmentation", "test-seg", mirroring=True, overlap=0.75)
    token = CancelToken()
    seen = []

    def progress(fraction, eta, message):
        seen.append(fraction)
        if fraction > 0:
            token.cancel()   # a Cancel button pressed once the job is under way

    with pytest.raises(Cancelled):
        client.wait(job_id, progress=progress, cancel=token, poll=0.02)
    deadline = time.monotonic() + 10
    while client.job(job_id)["state"] not in ("cancelled", "done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    job = client.job(job_id)
    assert job["state"] == "cancelled", job
    assert job["progress"] < 1.0
    with pytest.raises(BackendError) as error:
        client.result_bytes(job_id)
    assert error.value.status == 409


def test_predict_segment_with_server_end_to_end(server, array, tmp_path, capsys):
    image = sitk.GetImageFromArray(array)
    GEOMETRY.apply_to_sitk(image)
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    output = tmp_path / "out" / "ct.seg.nrrd"
    common = ["predict", "segment", "--server", server.url, "--token", server.token, "--input",
              str(tmp_path / "ct.nrrd"), "--output", str(output), "--quiet"]
    assert main(common + ["--model", "test-seg"]) == 0, capsys.readouterr().err
    seg = read_segmentation(output)
    assert seg.labels.shape == (18, 30, 27)
    np.testing.assert_allclose(seg.geometry.direction, GEOMETRY.direction, atol=1e-6)
    assert [p.name for p in output.parent.iterdir()] == ["ct.seg.nrrd"]   # no temp files left behind
    capsys.readouterr()
    assert main(common[:-3] + ["--output", str(tmp_path / "x.seg.nrrd"), "--model", "test-landmarks"]) == 2
    assert "landmarks model" in capsys.readouterr().err and not (tmp_path / "x.seg.nrrd").exists()


# ------------------------------------------------------------------------------- stand-ins for unusual servers


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers from ``server.script``: a list of (status, body dict) consumed in order, the last one repeated."""

    def do_GET(self):
        self.server.seen.append((self.command, self.path, self.headers.get("X-NNMamba-Client")))
        if self.path == "/version":
            status, body = 200, self.server.version
        else:
            status, body = self.server.script[0] if len(self.server.script) == 1 else self.server.script.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_DELETE = do_GET

    def log_message(self, *args):
        pass


def _scripted_server(script, version=None, port=0):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Scripted)
    server.script, server.seen = list(script), []
    server.version = version or {"nnmamba": __version__, "api": 1}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def scripted():
    servers = []

    def start(script, **options):
        servers.append(_scripted_server(script, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server):
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_an_incompatible_server_version_is_refused(scripted):
    server = scripted([(200, [])], version={"nnmamba": "9.0.0", "api": 99})
    with pytest.raises(BackendError, match=r"nnmamba 9\.0\.0, API 99.*incompatible"):
        Client(_url(server), token="t").models()
    assert server.seen == [("GET", "/version", __version__)]   # nothing else was asked


def test_idempotent_calls_are_retried_on_5xx_and_posts_are_not(scripted):
    server = scripted([(503, {"detail": "busy"}), (502, {"detail": "gateway"}), (200, [{"id": "m"}])])
    client = Client(_url(server), token="t", retries=3)
    assert client.models() == [{"id": "m"}]
    assert [path for _, path, _ in server.seen] == ["/version", "/models", "/models", "/models"]
    server.script, server.seen = [(500, {"detail": "The worker crashed; see the server log."})], []
    with pytest.raises(BackendError, match="worker crashed") as error:
        client.submit("s", "segmentation", "m")
    assert error.value.status == 500 and len(server.seen) == 1
    assert all(version == __version__ for _, _, version in server.seen)


def test_a_server_that_comes_back_is_reached_by_the_retries(scripted):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", token="t", retries=4)
    started = time.monotonic()
    with pytest.raises(BackendError, match="No nnmamba server at .*nnmamba serve"):
        client.health()
    assert 0.5 < time.monotonic() - started < 3   # 4 retries with short backoff, then the clear error
    timer = threading.Timer(0.15, lambda: scripted([(200, {"status": "ok"})], port=port))
    timer.start()   # the server "restarts" while the client retries
    assert client.health() == {"status": "ok"}
    timer.join()


def test_local_server_reports_a_failed_start_and_reaps_its_child():
    server = LocalServer(extra_args=["--no-such-option"], start_timeout=30)
    with pytest.raises(BackendError, match="no-such-option") as error:
        server.start()
    assert "exit" in str(error.value) and server.process is None


def test_an_upload_over_the_limit_is_refused_early_and_stop_reaps_the_server(models, array):
    server = LocalServer(device="cpu", models_dir=models["root"], extra_args=["--max-upload-mb", "1"]).start()
    process, url = server.process, server.url
    client = server.client()
    started = time.monotonic()
    with pytest.raises(BackendRequestError, match="max-upload-mb") as error:
        client.upload_volume(np.tile(array, (40, 1, 1)), GEOMETRY)   # 1.3 MB: answered before the body is read
    assert error.value.status == 413 and time.monotonic() - started < 2
    server.stop()
    assert process.returncode is not None   # waited for: no zombie left
    with pytest.raises(BackendError, match="No nnmamba server"):
        Client(url, retries=0).health()
