"""HTTP client of the nnmamba server (API v1), for the Slicer modules and ``nnmamba predict --server``.

Standard library only (Slicer's Python may have nothing else), numpy imported when arrays are involved. Every call
has a timeout; only idempotent calls (GET, DELETE) are retried, on connection errors and 5xx answers, so that a
retry can never submit a job or upload a volume twice. Errors carry the server's own one-sentence ``detail``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import NamedTuple, Optional

from . import __version__
from .api import API_VERSION, DEFAULT_TOKEN_FILE, DONE, FAILED, FINAL_STATES, TOKEN_ENV
from .progress import Cancelled

UPLOAD_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")
_RETRY_STATUSES = range(500, 600)
_REQUEST_STATUSES = (400, 404, 413, 422)   # the request as given was refused: bad input, not a broken server


class BackendError(RuntimeError):
    """The server could not be reached, refused the call or failed. ``status`` is the HTTP status (None when no
    answer came) and ``detail`` the server's message."""

    def __init__(self, message, status=None, detail=None):
        super().__init__(message)
        self.status = status
        self.detail = detail


class BackendRequestError(BackendError, ValueError):
    """The server refused the request as given (unknown model or session, a point outside the volume, a volume
    that cannot be used, too large an upload): a ValueError too, so callers treat it as bad input."""


def _normalized_url(url):
    url = str(url).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Server address {url!r} is not an http(s) URL; give e.g. http://127.0.0.1:8765.")
    return parts


def _read_token(token, token_file):
    """The token given, else the token file given, else $NNMAMBA_SERVER_TOKEN, else the server's default token
    file when it exists (a server on this machine); None sends no token (the server will answer 401)."""
    if token:
        return str(token).strip()
    if token_file is not None:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise ValueError(f"Token file {path} not found. Give the file that `nnmamba serve` printed at start "
                             "(default ~/.nnmamba/server-token on the server machine).")
        return path.read_text(encoding="utf-8").strip()
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if DEFAULT_TOKEN_FILE.is_file():
        return DEFAULT_TOKEN_FILE.read_text(encoding="utf-8").strip()
    return None


def _api_major(value):
    try:
        return int(str(value).split(".")[0])
    except ValueError:
        return None


class Client:
    """One nnmamba server. Safe to share between threads: each call opens its own connection."""

    def __init__(self, url, token=None, token_file=None, timeout=30, retries=3):
        self._parts = _normalized_url(url)
        self.url = urllib.parse.urlunsplit((self._parts.scheme, self._parts.netloc, self._parts.path, "", ""))
        self.token = _read_token(token, token_file)
        self.timeout = float(timeout)
        self.retries = max(int(retries), 0)
        self._server_version = None

    def __repr__(self):
        return f"Client({self.url!r})"

    # -- transport -----------------------------------------------------------------------------------------
    def _connection(self, timeout=None):
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return kind(self._parts.hostname, self._parts.port, timeout=timeout or self.timeout)

    def _headers(self, extra=None):
        headers = {"X-NNMamba-Client": __version__, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _send_once(self, method, path, body, headers, timeout):
        connection = self._connection(timeout)
        try:
            try:
                connection.request(method, self._parts.path + path, body=body, headers=self._headers(headers))
            except (BrokenPipeError, ConnectionResetError):
                if body is None:
                    raise
                # The server answered before reading the whole body (an upload over its limit) and closed the
                # connection: its answer, if it reached us, says why.
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def request(self, method, path, body=None, headers=None, timeout=None, check_version=True):
        """(status, headers, body bytes) of a successful call; raises :class:`BackendError` otherwise."""
        if check_version and self._server_version is None:
            self.check_version()
        idempotent = method in ("GET", "HEAD", "DELETE")
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, answer_headers, data = self._send_once(method, path, body, headers, timeout)
            except (OSError, http.client.HTTPException) as error:   # refused, reset, DNS, TLS, timeouts
                if isinstance(error, (socket.timeout, TimeoutError)):
                    raise BackendError(f"The nnmamba server at {self.url} did not answer {method} {path} within "
                                       f"{timeout or self.timeout:g} s. It may be overloaded; try again or raise "
                                       "the timeout.") from None
                if last:
                    raise self._unreachable(error) from None
            else:
                if status < 400:
                    return status, answer_headers, data
                if status not in _RETRY_STATUSES or last:
                    raise self._refused(method, path, status, data)
            time.sleep(min(0.1 * 2 ** attempt, 1.0))
        raise AssertionError("unreachable")

    def _unreachable(self, error):
        if isinstance(error, ConnectionRefusedError):
            return BackendError(f"No nnmamba server at {self.url}: start one with `nnmamba serve` (or check the "
                                "address and port).")
        if isinstance(error, socket.gaierror):
            return BackendError(f"No nnmamba server at {self.url}: the host name {self._parts.hostname!r} does not "
                                "resolve. Check the address.")
        return BackendError(f"Lost the connection to the nnmamba server at {self.url} ({type(error).__name__}: "
                            f"{error}). Check that `nnmamba serve` is still running.")

    def _refused(self, method, path, status, data):
        detail = _detail(data)
        if status == 401:
            return BackendError(f"The nnmamba server at {self.url} refused the token ({detail or 'unauthorized'}). "
                                "Give the token it printed at start (--token / --token-file; by default the server "
                                "writes it to ~/.nnmamba/server-token on its machine).", status, detail)
        kind = BackendRequestError if status in _REQUEST_STATUSES else BackendError
        return kind(f"{detail or f'{method} {path} failed'} (server {self.url}, HTTP {status})", status, detail)

    def _json(self, method, path, payload=None, **options):
        body, headers = None, None
        if payload is not None:
            body, headers = json.dumps(payload).encode("utf-8"), {"Content-Type": "application/json"}
        status, _, data = self.request(method, path, body, headers, **options)
        return json.loads(data) if data and status != 204 else None

    # -- server --------------------------------------------------------------------------------------------
    def health(self, timeout=None):
        """``{"status": "ok"}`` when a server answers (no token needed)."""
        return self._json("GET", "/health", check_version=False, timeout=timeout)

    def version(self):
        return self._json("GET", "/version", check_version=False)

    def check_version(self):
        """Refuse a server whose API major version differs from this client's, with a message saying what to
        install; done once, before the first call that needs the token."""
        answer = self.version()
        server_api = _api_major(answer.get("api")) if isinstance(answer, dict) else None
        if server_api != API_VERSION:
            server = answer.get("nnmamba", "?") if isinstance(answer, dict) else "?"
            raise BackendError(f"The nnmamba server at {self.url} (nnmamba {server}, API "
                               f"{answer.get('api') if isinstance(answer, dict) else '?'}) and this client (nnmamba "
                               f"{__version__}, API {API_VERSION}) are incompatible: install the same nnmamba "
                               "version on both sides.")
        self._server_version = answer
        return answer

    def environment(self, timeout=None):
        return self._json("GET", "/environment", timeout=timeout)

    def models(self, timeout=None):
        return self._json("GET", "/models", timeout=timeout)

    def model(self, model_id):
        """The package's model.json."""
        return self._json("GET", f"/models/{_quote(model_id)}")

    # -- sessions ------------------------------------------------------------------------------------------
    def upload_volume(self, array, geometry, name=None, timeout=None):
        """Upload voxels ``(K, J, I)`` or ``(C, K, J, I)`` (as ``slicer.util.arrayFromVolume`` gives them) and
        their geometry; returns the session id. ``geometry``: an :class:`nnmamba.geometry.Geometry` (LPS), a
        4x4 IJK→RAS matrix (Slicer's ``GetIJKToRASMatrix``, as a numpy array or nested lists), or a dict with
        LPS ``origin``, ``spacing`` and ``direction``. The voxels go as raw little-endian bytes in their own
        type (no float conversion), without copying when the array is already contiguous little-endian."""
        import numpy as np

        array = _upload_array(np.asarray(array))
        geometry = _geometry(geometry)
        shape = array.shape if array.ndim == 3 else array.shape[1:]
        query = {"shape": ",".join(str(n) for n in shape), "dtype": array.dtype.name}
        if array.ndim == 4:
            query["channels"] = str(array.shape[0])
        if name:
            query["name"] = str(name)
        header = json.dumps({"origin": geometry.origin.tolist(), "spacing": geometry.spacing.tolist(),
                             "direction": geometry.direction.reshape(-1).tolist()})
        body = memoryview(array).cast("B")
        headers = {"Content-Type": "application/octet-stream", "X-Geometry": header,
                   "Content-Length": str(body.nbytes)}
        _, _, data = self.request("POST", "/sessions?" + urllib.parse.urlencode(query), body, headers,
                                  timeout=timeout)
        return json.loads(data)["id"]

    def upload_file(self, path):
        """Upload an image file (NIfTI, NRRD, MHA) as it is; the server reads it. Returns the session id."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"Image file not found: {path}.")
        query = urllib.parse.urlencode({"filename": path.name})
        with open(path, "rb") as handle:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
            _, _, data = self.request("POST", f"/sessions/file?{query}", handle, headers)
        return json.loads(data)["id"]

    def session(self, session_id):
        return self._json("GET", f"/sessions/{_quote(session_id)}")

    def delete_session(self, session_id):
        self.request("DELETE", f"/sessions/{_quote(session_id)}")

    # -- jobs ----------------------------------------------------------------------------------------------
    def submit(self, session_id, task, model, **options):
        """Queue ``task`` ("segmentation", "landmarks" or "classification") with ``model`` on a session; returns
        the job id. ``options``: overlap, mirroring, refine, device (None values are left to the model)."""
        options = {key: value for key, value in options.items() if value is not None}
        answer = self._json("POST", f"/sessions/{_quote(session_id)}/jobs",
                            {"task": task, "model": model, "options": options})
        return answer["id"]

    def job(self, job_id):
        return self._json("GET", f"/jobs/{_quote(job_id)}")

    def cancel(self, job_id):
        """Ask the server to stop the job (at its next tile); returns the state it answered."""
        return self._json("DELETE", f"/jobs/{_quote(job_id)}")

    def wait(self, job_id, progress=None, cancel=None, poll=0.2, timeout=None):
        """Poll the job until it ends; returns the final job dict. ``progress(fraction, eta, message)`` is called
        when the job advances; when ``cancel.cancelled`` turns true (a CancelToken or any object with that
        attribute), or on Ctrl-C, the job is cancelled on the server and Cancelled (resp. KeyboardInterrupt) is
        raised. A failed job raises BackendError with the job's error message."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_report = None
        try:
            while True:
                if cancel is not None and cancel.cancelled:
                    self._cancel_quietly(job_id)
                    raise Cancelled("Cancelled by the user; the job was stopped on the server.")
                job = self.job(job_id)
                report = (job.get("progress"), job.get("eta"), job.get("message"))
                if progress is not None and report != last_report:
                    progress(float(report[0] or 0.0), report[1], report[2] or "")
                    last_report = report
                state = job.get("state")
                if state == "done":
                    return job
                if state == "failed":
                    error = job.get("error") or "unknown error"
                    raise BackendError(f"The job failed on the server: {error}", detail=error)
                if state == "cancelled":
                    raise Cancelled("The job was cancelled on the server; no result.")
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendError(f"Job {job_id} did not finish within {timeout:g} s (state {state}); it keeps "
                                       "running on the server.")
                _sleep_unless_cancelled(poll, cancel)
        except KeyboardInterrupt:
            self._cancel_quietly(job_id)
            raise

    def _cancel_quietly(self, job_id):
        """Cancel, ignoring 'already finished' (409) and a server gone meanwhile: the caller is stopping anyway."""
        try:
            self.cancel(job_id)
        except BackendError:
            pass

    def result_bytes(self, job_id):
        """The result file of a finished job: .seg.nrrd, .mrk.json or .json bytes."""
        _, _, data = self.request("GET", f"/jobs/{_quote(job_id)}/result")
        return data

    def result_json(self, job_id):
        """The result as JSON: segments and labels shape, points and lines, or the classification dict."""
        return self._json("GET", f"/jobs/{_quote(job_id)}/result?format=json")

    # -- click ---------------------------------------------------------------------------------------------
    def click(self, session_id, model, positive, negative=(), coordinates="LPS", timeout=None):
        """The structure under the points (mm, in ``coordinates`` "LPS" or "RAS"): the server's answer with
        ``mask`` as a uint8 (K, J, I) numpy array whose voxel (0, 0, 0) is input index ``offset`` (i, j, k).
        ``timeout``: seconds for this call (a first click on a CPU can take minutes; default: the client's)."""
        import numpy as np

        payload = {"model": model, "positive": _points(positive), "negative": _points(negative),
                   "coordinates": coordinates}
        answer = self._json("POST", f"/sessions/{_quote(session_id)}/click", payload, timeout=timeout)
        shape = tuple(int(n) for n in answer["shape"])
        packed = np.frombuffer(base64.b64decode(answer["mask"]), dtype=np.uint8)
        answer["mask"] = np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape)
        answer["offset"] = tuple(int(n) for n in answer["offset"])
        return answer



# -- one job, as every waiter sees it ----------------------------------------------------------------------------------
_RESULT_SUFFIXES = {"segmentation": ".seg.nrrd", "landmarks": ".mrk.json", "classification": ".json"}


class JobStatus(NamedTuple):
    """What the server says about a job, ready for a progress bar."""

    state: str                       # queued | running | done | failed | cancelled
    progress: float                  # 0..1
    eta_seconds: Optional[float]     # None until the server can estimate it
    message: str                     # e.g. "tile 3 of 12", "queued (1 job ahead)", or the error when failed
    done: bool                       # the job ended (done, failed or cancelled): stop polling
    error: Optional[str] = None      # the server's one-sentence reason when failed

    @property
    def succeeded(self):
        return self.state == DONE


class Job:
    """A job on the server, the one type every waiter uses (the CLI's --server runs, the Slicer modules' panels,
    scripts): poll it until ``poll().done``, or :meth:`wait`; cancel it; read its result."""

    def __init__(self, client, job_id, task=None, model=None, session=None):
        self.client = client
        self.id = job_id
        self.task = task
        self.model = model
        self.session = session
        self.last_status = None
        self.info = {}   # the server's last answer about the job

    def __repr__(self):
        return f"Job({self.id!r}, {self.task}, {self.model!r})"

    @property
    def seconds(self):
        """How long the job ran on the server (NaN until it ended)."""
        started, finished = self.info.get("started"), self.info.get("finished")
        return finished - started if started is not None and finished is not None else float("nan")

    def poll(self):
        """The job's status now (one GET /jobs/{id})."""
        info = self.info = self.client.job(self.id)
        state = info.get("state", FAILED)
        error = info.get("error")
        message = error if state == FAILED and error else (info.get("message") or state)
        eta = info.get("eta")
        self.last_status = JobStatus(state, float(info.get("progress") or 0.0), None if eta is None else float(eta),
                                     str(message), state in FINAL_STATES, error)
        return self.last_status

    def cancel(self):
        """Ask the server to stop the job at its next tile; a job that already ended is left as it is."""
        try:
            self.client.cancel(self.id)
        except BackendError as error:
            if error.status != 409:   # 409: already finished
                raise

    def wait(self, timeout=None, poll=0.2, progress=None, cancel=None):
        """Block until the job ends; returns the final status. Raises BackendError when the job failed and
        nnmamba.progress.Cancelled when it was cancelled (see :meth:`Client.wait`)."""
        self.client.wait(self.id, progress=progress, cancel=cancel, poll=poll, timeout=timeout)
        return self.poll()

    def result_json(self):
        """The result's JSON form (segments, points and lines, or classes/probabilities/decision)."""
        return self.client.result_json(self.id)

    def result_bytes(self):
        return self.client.result_bytes(self.id)

    def result_file(self, folder):
        """Write the result file (.seg.nrrd, .mrk.json or .json) into ``folder``, all or nothing; its path."""
        import tempfile

        _, headers, data = self.client.request("GET", f"/jobs/{_quote(self.id)}/result")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _result_filename(headers, self.task)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def _result_filename(headers, task):
    disposition = next((v for k, v in headers.items() if k.lower() == "content-disposition"), "")
    found = re.search(r'filename="?([^";/\\]+)"?', disposition)
    name = found.group(1).strip() if found else ""
    if not name or name.startswith("."):
        name = (task or "result") + _RESULT_SUFFIXES.get(task, ".bin")
    return name


def _quote(identifier):
    return urllib.parse.quote(str(identifier), safe="")


def _detail(data):
    """The server's ``detail`` sentence, or the start of whatever else it answered."""
    try:
        detail = json.loads(data).get("detail")
    except (ValueError, AttributeError):
        return data[:300].decode("utf-8", "replace").strip() or None
    if isinstance(detail, list):   # a framework's validation list: join the messages
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return None if detail is None else str(detail)


def _sleep_unless_cancelled(seconds, cancel):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (cancel is not None and cancel.cancelled):
        time.sleep(min(0.02, max(end - time.monotonic(), 0)))


def _points(points):
    import numpy as np

    array = np.asarray(points, dtype=float).reshape(-1, 3)
    return array.tolist()


def _upload_array(array):
    """The array as the server takes it: 3D or 4D, a supported type, little-endian, C-contiguous."""
    import numpy as np

    if array.ndim not in (3, 4):
        raise ValueError(f"Upload a 3D volume (K, J, I) or channels (C, K, J, I); got an array of shape "
                         f"{tuple(array.shape)}.")
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        fits = array.size == 0 or (array.min() >= info.min and array.max() <= info.max)
        array = array.astype(np.int32 if fits else np.float64)
    if array.dtype.newbyteorder("=").name not in UPLOAD_DTYPES:
        raise ValueError(f"Voxels of type {array.dtype} cannot be uploaded; use one of {', '.join(UPLOAD_DTYPES)}.")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _geometry(geometry):
    """A Geometry from a Geometry, a 4x4 IJK→RAS matrix or a dict of LPS origin/spacing/direction."""
    import numpy as np

    from .geometry import Geometry

    if isinstance(geometry, Geometry):
        return Geometry.create(*geometry)
    if isinstance(geometry, dict):
        return Geometry.create(geometry["origin"], geometry["spacing"], geometry.get("direction"))
    matrix = np.asarray(geometry, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError("geometry must be an nnmamba.geometry.Geometry, a 4x4 IJK→RAS matrix (Slicer's "
                         f"GetIJKToRASMatrix) or a dict of LPS origin/spacing/direction; got shape {matrix.shape}.")
    return Geometry.from_ijk_to_ras(matrix)
