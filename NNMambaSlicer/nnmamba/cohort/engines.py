"""Running a cohort: locally (one model, the next case read while the current one runs) or on Ray (one actor per
GPU or per group of CPU cores, each loading the model once; cases streamed with back-pressure; a case whose worker
died is retried once elsewhere). Both write the same manifest as cases finish."""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .cases import input_hash
from .manifest import Manifest


@dataclass
class CohortSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rows: list = field(default_factory=list)

    def count(self, row):
        if row["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
        self.rows.append(row)


def _pending(cases, manifest, resume):
    """Cases still to run, their input hashes, and how many a resumed run skips (their rows stay)."""
    todo, skipped = [], 0
    for case in cases:
        digest = input_hash(case) if resume else None
        if resume and manifest.is_done(case, digest):
            skipped += 1
            continue
        todo.append((case, digest))
    return todo, skipped


def _progress(total, description, quiet):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="case", disable=quiet, dynamic_ncols=True)


def run_local(runner, cases, out_dir, resume=False, quiet=False, on_row: Optional[Callable] = None):
    """Run every case with one :class:`~.runner.CaseRunner`. Ctrl-C stops after writing the manifest of the cases
    that finished (KeyboardInterrupt is raised again for the caller's exit code)."""
    started = time.perf_counter()
    manifest = Manifest.load(out_dir) if resume else Manifest(out_dir)
    todo, skipped = _pending(cases, manifest, resume)
    summary = CohortSummary(skipped=skipped)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnmamba-read") as reader, \
            _progress(len(todo), f"{runner.task} with {runner.package.id}", quiet) as bar:
        upcoming = reader.submit(_read_quietly, runner, todo[0][0]) if todo else None
        for position, (case, digest) in enumerate(todo):
            volume = upcoming.result()
            upcoming = reader.submit(_read_quietly, runner, todo[position + 1][0]) if position + 1 < len(todo) \
                else None
            row = runner.process(case, out_dir, volume=volume, digest=digest)
            manifest.record(row)
            summary.count(row)
            if on_row is not None:
                on_row(row)
            bar.set_postfix_str(f"{summary.failed} failed" if summary.failed else "", refresh=False)
            bar.update(1)
    summary.seconds = time.perf_counter() - started
    return summary


def _read_quietly(runner, case):
    """The case's volume, or the exception reading it raised (handed to process, which records it)."""
    try:
        return runner.read(case)
    except Exception as error:
        return error


def run_ray(model, task, cases, out_dir, address=None, device="auto", cpus_per_worker=None, resume=False,
            quiet=False, runner_options=None, on_submit: Optional[Callable] = None, retries=1):
    """The cohort on Ray: ``address`` None starts a local Ray on this machine, "auto" or "ray://host:10001" joins a
    cluster. One actor per GPU with ``device`` cuda (or auto on a cluster with GPUs), else one per
    ``cpus_per_worker`` cores. ``on_submit(case, actor_pid)`` is told where each case went (for tests and logs)."""
    import ray

    started = time.perf_counter()
    if not ray.is_initialized():
        local = {"_node_ip_address": "127.0.0.1"} if address is None else {}   # a local Ray stays on loopback
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **local)
    manifest = Manifest.load(out_dir) if resume else Manifest(out_dir)
    todo, skipped = _pending(cases, manifest, resume)
    summary = CohortSummary(skipped=skipped)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and str(device) in ("auto", "cuda") or str(device).startswith("cuda:")
    if use_gpu:
        options, count = {"num_gpus": 1, "num_cpus": 1}, gpus
    else:
        per = cpus_per_worker or max(1, int(resources.get("CPU", 1)) // 2)
        options, count = {"num_cpus": per}, max(1, int(resources.get("CPU", 1)) // per)
    worker = ray.remote(**options)(_CaseActor)
    arguments = (str(model), task, "cuda" if use_gpu else ("cpu" if device == "auto" else device),
                 dict(runner_options or {}), str(out_dir))
    pids = {}

    def start_actor():
        actor = worker.remote(*arguments)
        pids[id(actor)] = ray.get(actor.pid.remote())   # also waits until the model is loaded
        return actor

    actors = [start_actor() for _ in range(min(count, len(todo)))]
    queue = list(todo)
    attempts = {}
    in_flight = {}   # object ref -> (case, digest, actor)
    with _progress(len(todo), f"{task} with {model} on Ray ({len(actors)} workers)", quiet) as bar:
        def submit(actor):
            case, digest = queue.pop(0)
            attempts[case.id] = attempts.get(case.id, 0) + 1
            reference = actor.process.remote(case, digest)
            in_flight[reference] = (case, digest, actor)
            if on_submit is not None:
                on_submit(case, pids[id(actor)])

        for actor in actors:   # back-pressure: one case per actor in flight, the rest waits here
            if queue:
                submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            case, digest, actor = in_flight.pop(ready[0])
            try:
                row = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                actors.remove(actor)
                actor = start_actor()   # a fresh worker takes the dead one's place
                actors.append(actor)
                if attempts[case.id] <= retries:
                    queue.insert(0, (case, digest))
                    submit(actor)
                    continue
                row = {"case": case.id, "status": "failed", "error": f"the worker died twice: {error}",
                       "inputs": ";".join(str(p) for p in case.inputs)}
            manifest.record(row)
            summary.count(row)
            bar.update(1)
            if queue:
                submit(actor)
    for actor in actors:
        ray.kill(actor)
    summary.seconds = time.perf_counter() - started
    return summary


class _CaseActor:
    """A Ray actor: one CaseRunner (the model loaded once), cases processed one at a time."""

    def __init__(self, model, task, device, runner_options, out_dir):
        from .runner import CaseRunner

        self.runner = CaseRunner(model, task, device=device, **runner_options)
        self.out_dir = out_dir

    def pid(self):
        import os

        return os.getpid()

    def process(self, case, digest):
        return self.runner.process(case, self.out_dir, digest=digest)
