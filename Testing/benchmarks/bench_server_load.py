"""`nnmamba serve` under load and faults: N concurrent clients on the bundled demo models, then a fault script.

Load: each client uploads a sample volume (raw voxels or the .nrrd file, alternately), submits a job (3 of every 5
clients a CT segmentation, then fetal landmarks, then brain classification), clicks on its CT while the jobs run,
polls, downloads the result file and its JSON form, and deletes its session; ``--rounds`` times. A poller asks
``/health`` every 0.1 s throughout and the server's resident memory (RSS) is sampled every 0.1 s.

Faults, one after the other: cancel a running job; a client that disconnects mid-upload and one that disconnects
mid-download (TCP reset); kill -9 of the server during a file upload and a job, then a restart on the same port.

Printed: jobs/min, p50/p95 of /health and of a click made during a job, server RSS at start (after a warm-up job of
each kind), peak and after the run, errors, and whether every result equalled the single-job result of the warm-up.
Goals: 0 errors, /health p95 <= 100 ms, RSS after <= 1.2x RSS at start. Exit status 0 when every goal is met.

Only a server on 127.0.0.1 started here is ever addressed. About 3-4 minutes on 2 CPU cores with the defaults;
``--clients 5 --no-faults`` takes well under a minute.

    .venv/bin/python Testing/benchmarks/bench_server_load.py [--clients 20] [--rounds 1] [--no-faults]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "Resources" / "SampleData"
HOST = "127.0.0.1"          # the only address this benchmark ever talks to
LOGS = []                   # the servers' stderr files, removed at the end
GOAL_HEALTH_P95_S, GOAL_RSS_RATIO = 0.100, 1.2
# task, model, sample file, click model (None: no click on that volume)
WORK = {"segmentation": ("demo-abdomen-ct", "NNMambaDemoAbdomenCT.nrrd"),
        "landmarks": ("demo-fetal-landmarks", "NNMambaDemoFetalBrain.nrrd"),
        "classification": ("demo-brain-atrophy", "NNMambaDemoBrainAtrophy.nrrd")}
TASK_OF_CLIENT = ("segmentation", "segmentation", "segmentation", "landmarks", "classification")
CLICK_MODEL = "demo-abdomen-ct"


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(round(q / 100 * (len(ordered) - 1))), len(ordered) - 1)]


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Server:
    """``python -m nnmamba serve`` on 127.0.0.1 as a child process, its stderr in a file."""

    def __init__(self, device, models_dir, token, port=0, extra=()):
        self.token, self.device, self.models_dir, self.extra = token, device, models_dir, list(extra)
        self.log = tempfile.NamedTemporaryFile(prefix="nnmamba-bench-server-", suffix=".log", delete=False)
        LOGS.append(Path(self.log.name))
        env = dict(os.environ, NNMAMBA_SERVER_TOKEN=token, PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "nnmamba", "serve", "--host", HOST, "--port", str(port), "--device",
                   device, "--models-dir", str(models_dir), *self.extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.process.kill()
            raise RuntimeError(f"The server did not start: {line!r}; log {self.log.name}")
        self.url = line.split(" on ", 1)[1].split()[0]
        parts = urllib.parse.urlsplit(self.url)
        assert parts.hostname == HOST, self.url
        self.port = parts.port
        self.pid = self.process.pid
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def client(self, **options):
        from nnmamba.client import Client

        return Client(self.url, token=self.token, **options)

    def log_text(self):
        return Path(self.log.name).read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill9(self):
        self.process.kill()
        self.process.wait()


def raw_request(port, method, path, token, headers=(), body=b"", timeout=30):
    """(status, body) over a plain socket connection to 127.0.0.1."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.putrequest(method, path)
        connection.putheader("Authorization", f"Bearer {token}")
        for name, value in headers:
            connection.putheader(name, value)
        if body or method == "POST":
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Sampler:
    """Background threads: /health every 0.1 s (latency, failures) and the server's RSS every 0.1 s."""

    def __init__(self, server):
        self.server = server
        self.health, self.health_failures, self.rss = [], [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll_health, daemon=True),
                         threading.Thread(target=self._poll_rss, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _poll_health(self):
        while not self._stop.wait(0.1):
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection(HOST, self.server.port, timeout=10)
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                connection.close()
                if response.status != 200:
                    self.health_failures.append(f"/health answered {response.status}")
            except OSError as error:
                self.health_failures.append(f"/health: {type(error).__name__}: {error}")
                continue
            self.health.append(time.perf_counter() - started)

    def _poll_rss(self):
        while not self._stop.wait(0.1):
            value = rss_bytes(self.server.pid)
            if value:
                self.rss.append(value)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


# ---------------------------------------------------------------------------------------------------- results


def canonical(task, data, document):
    """What must be equal between two runs of a job: voxels and metadata, not timings or the file's date line."""
    if task == "segmentation":
        from nnmamba.formats import read_segmentation

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "result.seg.nrrd"
            path.write_bytes(data)
            labels = read_segmentation(path).labels
        return ("segmentation", labels.shape, labels.tobytes(), json.dumps(document["segments"], sort_keys=True))
    if task == "landmarks":
        return ("landmarks", json.dumps(document["points"], sort_keys=True), json.dumps(document["lines"],
                                                                                       sort_keys=True))
    return ("classification", json.dumps({k: v for k, v in document.items() if k != "seconds"}, sort_keys=True))


def click_canonical(answer):
    return (answer["label"], tuple(answer["offset"]), np.asarray(answer["mask"]).tobytes())


class Inputs:
    def __init__(self):
        import SimpleITK as sitk

        from nnmamba.geometry import Geometry

        self.files, self.arrays, self.geometries = {}, {}, {}
        for task, (_, name) in WORK.items():
            path = SAMPLES / name
            image = sitk.ReadImage(str(path))
            self.files[task] = path
            self.arrays[task] = sitk.GetArrayFromImage(image)      # the stored voxel type, as Slicer sends it
            self.geometries[task] = Geometry.from_sitk(image)
        ct = self.geometries["segmentation"]
        self.click_point = ct.index_to_lps(np.array(self.arrays["segmentation"].shape[::-1]) / 2).tolist()

    def upload(self, client, task, as_file):
        if as_file:
            return client.upload_file(self.files[task])
        return client.upload_volume(self.arrays[task], self.geometries[task])


def reference_results(server, inputs):
    """Each job and the click alone on an idle server (also the warm-up: models loaded, kernels compiled)."""
    client = server.client(timeout=600)
    references, seconds = {}, {}
    for task, (model, _) in WORK.items():
        session = inputs.upload(client, task, as_file=False)
        started = time.perf_counter()
        job = client.submit(session, task, model)
        client.wait(job, poll=0.1)
        seconds[task] = time.perf_counter() - started
        references[task] = canonical(task, client.result_bytes(job), client.result_json(job))
        if task == "segmentation":
            started = time.perf_counter()
            references["click"] = click_canonical(client.click(session, CLICK_MODEL, [inputs.click_point]))
            seconds["click"] = time.perf_counter() - started
        client.delete_session(session)
    return references, seconds


# ------------------------------------------------------------------------------------------------------- load


def run_load(server, inputs, references, clients, rounds):
    timings = {"upload": [], "submit": [], "click": [], "all_clicks": [], "job": [], "end_to_end": []}
    errors, mismatches, done = [], [], []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients)

    def work(index):
        client = server.client(timeout=600)
        task = TASK_OF_CLIENT[index % len(TASK_OF_CLIENT)]
        model = WORK[task][0]
        start_barrier.wait()
        for round_index in range(rounds):
            step = "upload"
            try:
                started = time.perf_counter()
                session = inputs.upload(client, task, as_file=(index + round_index) % 2 == 1)
                uploaded = time.perf_counter()
                step = "submit"
                job = client.submit(session, task, model)
                submitted = time.perf_counter()
                click = None
                if task == "segmentation":
                    step = "click"
                    clicked = time.perf_counter()
                    running = client.job(job)["state"] in ("queued", "running")
                    answer = client.click(session, CLICK_MODEL, [inputs.click_point])
                    click = (time.perf_counter() - clicked, running, click_canonical(answer))
                step = "wait"
                client.wait(job, poll=0.25)
                finished = time.perf_counter()
                step = "download"
                result = canonical(task, client.result_bytes(job), client.result_json(job))
                step = "delete"
                client.delete_session(session)
                with lock:
                    timings["upload"].append(uploaded - started)
                    timings["submit"].append(submitted - uploaded)
                    timings["job"].append(finished - submitted)
                    timings["end_to_end"].append(time.perf_counter() - started)
                    done.append(task)
                    if click is not None:
                        timings["all_clicks"].append(click[0])
                        if click[1]:
                            timings["click"].append(click[0])
                        if click[2] != references["click"]:
                            mismatches.append(f"client {index}: click differs from the single click")
                    if result != references[task]:
                        mismatches.append(f"client {index}: {task} result differs from the single job")
            except Exception as error:  # counted and reported, never fatal to the run
                with lock:
                    errors.append(f"client {index} round {round_index} {step}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, timings, errors, mismatches, done


# ----------------------------------------------------------------------------------------------------- faults


def fault_script(server, inputs, references, restart):
    """[(fault, ok, what happened)]; returns the (possibly restarted) server too."""
    outcomes = []
    client = server.client(timeout=600)

    def check(name, ok, text):
        outcomes.append((name, bool(ok), text))

    # 1. cancel a running job
    try:
        session = inputs.upload(client, "segmentation", as_file=False)
        job = client.submit(session, "segmentation", WORK["segmentation"][0], overlap=0.8)
        deadline = time.monotonic() + 120
        while client.job(job)["progress"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        asked = time.perf_counter()
        answer = client.cancel(job)["state"]
        while client.job(job)["state"] not in ("cancelled", "done", "failed") and time.perf_counter() - asked < 60:
            time.sleep(0.02)
        state = client.job(job)["state"]
        check("cancel mid-run", state == "cancelled",
              f"answered {answer!r}, {state} after {time.perf_counter() - asked:.2f} s")
    except Exception as error:
        check("cancel mid-run", False, f"{type(error).__name__}: {error}")

    # 2. disconnect mid-upload (a raw upload whose body stops half-way, then a closed socket)
    log_before = server.log_text()
    try:
        array = inputs.arrays["segmentation"]
        body = array.astype("<i2").tobytes()
        geometry = inputs.geometries["segmentation"]
        query = urllib.parse.urlencode({"shape": ",".join(map(str, array.shape)), "dtype": "int16"})
        header = json.dumps({"origin": geometry.origin.tolist(), "spacing": geometry.spacing.tolist(),
                             "direction": geometry.direction.reshape(-1).tolist()})
        sock = socket.create_connection((HOST, server.port), timeout=10)
        sock.sendall((f"POST /sessions?{query} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {server.token}\r\n"
                      f"Content-Type: application/octet-stream\r\nX-Geometry: {header}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:len(body) // 2])
        time.sleep(0.3)
        sock.close()
        time.sleep(0.5)
        healthy = client.health(timeout=5) == {"status": "ok"}
        session = inputs.upload(client, "segmentation", as_file=False)
        added = server.log_text()[len(log_before):]
        noisy = added.count("Traceback") + added.count("Unexpected error")
        check("disconnect mid-upload", healthy and session and not noisy,
              f"server up, next upload accepted; {noisy} traceback/unexpected-error line(s) logged")
    except Exception as error:
        check("disconnect mid-upload", False, f"{type(error).__name__}: {error}")

    # 3. disconnect mid-download (read the headers and a few bytes, then a TCP reset)
    try:
        job = client.submit(session, "segmentation", WORK["segmentation"][0])
        client.wait(job, poll=0.1)
        for _ in range(5):
            sock = socket.create_connection((HOST, server.port), timeout=10)
            sock.sendall(f"GET /jobs/{job}/result HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer "
                         f"{server.token}\r\n\r\n".encode())
            sock.recv(64)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        same = canonical("segmentation", client.result_bytes(job), client.result_json(job)) == \
            references["segmentation"]
        check("disconnect mid-download", same, "5 downloads reset after 64 bytes; the next download "
              + ("equals the single-job result" if same else "DIFFERS from the single-job result"))
    except Exception as error:
        check("disconnect mid-download", False, f"{type(error).__name__}: {error}")

    # 4. kill -9 during a file upload and a job, then a restart on the same port
    try:
        earlier = set(leftover_uploads())     # other servers' files are not this fault's
        old_session = session
        job = client.submit(session, "segmentation", WORK["segmentation"][0], overlap=0.8)
        data = inputs.files["segmentation"].read_bytes()
        sock = socket.create_connection((HOST, server.port), timeout=10)
        sock.sendall((f"POST /sessions/file?filename=ct.nrrd HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer "
                      f"{server.token}\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data[:len(data) // 2])
        time.sleep(0.5)
        waiter_error = []

        def wait_for_job():
            try:
                server.client(timeout=30, retries=0).wait(job, poll=0.1)
            except Exception as error:
                waiter_error.append((time.perf_counter(), str(error)))

        waiter = threading.Thread(target=wait_for_job, daemon=True)
        waiter.start()
        time.sleep(0.5)
        killed = time.perf_counter()
        server.kill9()
        sock.close()
        waiter.join(60)
        noticed = f"{waiter_error[0][0] - killed:.2f} s" if waiter_error else "never"
        port = server.port
        started = time.perf_counter()
        server = restart(port)
        client = server.client(timeout=600)
        back = time.perf_counter() - started
        leftovers = sorted(set(leftover_uploads()) - earlier)
        try:
            client.session(old_session)
            old = "the old session still answered"
        except Exception as error:
            old = getattr(error, "detail", None) or str(error)
        fresh = inputs.upload(client, "segmentation", as_file=True)
        job = client.submit(fresh, "segmentation", WORK["segmentation"][0])
        client.wait(job, poll=0.1)
        same = canonical("segmentation", client.result_bytes(job), client.result_json(job)) == \
            references["segmentation"]
        says_restart = "restart" in old.lower()
        check("kill -9 and restart", bool(waiter_error) and same and not leftovers and says_restart,
              f"waiting client told after {noticed}; listening again after {back:.1f} s; partial upload files "
              f"left: {len(leftovers)}; old session -> {old[:200]!r}; a new job "
              + ("equals the single-job result" if same else "DIFFERS"))
    except Exception as error:
        check("kill -9 and restart", False, f"{type(error).__name__}: {error}")
    return outcomes, server


def leftover_uploads():
    """Partial upload files of this user: the old layout (temp folder) and the per-server folders."""
    temp = Path(tempfile.gettempdir())
    found = list(temp.glob("nnmamba-upload-*"))
    for folder in temp.glob("nnmamba-server-*"):
        with contextlib.suppress(OSError):
            found += [p for p in folder.rglob("*") if p.is_file() and p.name != "lock"]
    return found


# ------------------------------------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="upload/job/click/download cycles per client")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-faults", action="store_true", help="skip the fault script")
    parser.add_argument("--server-args", default="", help="extra `nnmamba serve` options, e.g. '--max-tiles 100'")
    args = parser.parse_args()

    token = secrets.token_urlsafe(24)
    inputs = Inputs()
    with tempfile.TemporaryDirectory(prefix="nnmamba-bench-models-") as models_dir:
        def start(port=0):
            return Server(args.device, models_dir, token, port, args.server_args.split())

        server = start()
        try:
            rss_cold = rss_bytes(server.pid)
            print(f"server {server.url} (pid {server.pid}), {args.clients} clients x {args.rounds} round(s), "
                  f"device {args.device}", flush=True)
            references, single = reference_results(server, inputs)
            print("single jobs on an idle server: " + ", ".join(f"{k} {v:.2f} s" for k, v in single.items()),
                  flush=True)
            time.sleep(2.0)
            rss_start = rss_bytes(server.pid)
            sampler = Sampler(server)
            wall, timings, errors, mismatches, done = run_load(server, inputs, references, args.clients, args.rounds)
            time.sleep(3.0)    # the server may give memory back a moment after the last request
            rss_after = rss_bytes(server.pid)
            sampler.stop()
            sessions_left = server.client().environment()["memory"]["sessions"]
            outcomes = []
            if not args.no_faults:
                outcomes, server = fault_script(server, inputs, references, start)
        finally:
            server.stop()
            log = "".join(Path(path).read_text(errors="replace") for path in LOGS)
            for path in LOGS:
                path.unlink(missing_ok=True)

    jobs_per_min = len(done) / (wall / 60) if wall else 0.0
    health_p50, health_p95 = percentile(sampler.health, 50), percentile(sampler.health, 95)
    peak = max(sampler.rss + [rss_start or 0])
    ratio = (rss_after or 0) / rss_start if rss_start else float("nan")
    fault_failures = [o for o in outcomes if not o[1]]
    total_errors = len(errors) + len(mismatches) + len(sampler.health_failures) + len(fault_failures)
    mb = 2 ** 20

    print()
    print(f"load: {len(done)} jobs in {wall:.1f} s = {jobs_per_min:.1f} jobs/min "
          f"({', '.join(f'{t} {done.count(t)}' for t in WORK)})")
    for name in ("upload", "submit", "job", "end_to_end"):
        values = timings[name]
        print(f"  {name:<11} p50 {percentile(values, 50):7.3f} s  p95 {percentile(values, 95):7.3f} s  "
              f"max {max(values) if values else float('nan'):7.3f} s")
    print(f"/health:      {len(sampler.health)} polls, p50 {health_p50 * 1000:.1f} ms, p95 {health_p95 * 1000:.1f} ms, "
          f"max {max(sampler.health) * 1000 if sampler.health else float('nan'):.1f} ms, "
          f"{len(sampler.health_failures)} failed")
    clicks = timings["click"]
    print(f"click during a job: {len(clicks)} clicks, p50 {percentile(clicks, 50):.2f} s, "
          f"p95 {percentile(clicks, 95):.2f} s, max {max(clicks) if clicks else float('nan'):.2f} s")
    print(f"server RSS:   cold {rss_cold / mb:.0f} MB, start (warm) {rss_start / mb:.0f} MB, peak {peak / mb:.0f} MB, "
          f"after {rss_after / mb:.0f} MB ({ratio:.2f}x start; {sessions_left} session(s) left)")
    all_clicks = len(timings["all_clicks"])
    print(f"results equal to the single-job result: {len(done) - sum('result' in m for m in mismatches)}/{len(done)}"
          f" jobs, {all_clicks - sum('click' in m for m in mismatches)}/{all_clicks} clicks")
    for name, ok, text in outcomes:
        print(f"fault: {name:<24} {'ok    ' if ok else 'FAILED'} {text}")
    log_problems = log.count("Traceback") + log.count("Unexpected error")
    print(f"server logs: {log_problems} traceback/unexpected-error line(s)")
    print(f"errors: {total_errors} (client {len(errors)}, result mismatches {len(mismatches)}, /health "
          f"{len(sampler.health_failures)}, faults {len(fault_failures)})")
    for line in (errors + mismatches + sampler.health_failures)[:10]:
        print("  " + line)
    goals = {"0 errors": total_errors == 0, f"/health p95 <= {GOAL_HEALTH_P95_S * 1000:.0f} ms":
             health_p95 <= GOAL_HEALTH_P95_S, f"RSS after <= {GOAL_RSS_RATIO}x start": ratio <= GOAL_RSS_RATIO}
    print("goals: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in goals.items()))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
