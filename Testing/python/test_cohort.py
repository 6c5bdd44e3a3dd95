"""Cohort runs (nnmamba.cohort, `nnmamba predict ... --input-dir/--inputs --output-dir`) on a folder of generated
phantoms with the bundled demo models: the same result files as single runs, byte for byte; a manifest with the
measurements; resume; a corrupt case that fails alone; and Ray on this machine, with a killed worker's case
retried."""

from __future__ import annotations

import csv
import json
import os
import signal

import numpy as np
import pytest
import SimpleITK as sitk

from nnmamba.cli import main as cli
from nnmamba.cohort import CaseRunner, find_cases, run_local
from nnmamba.cohort.cases import CaseListError
from nnmamba.demo.training_data import default_phantom


def write_phantom(path, phantom):
    image = sitk.GetImageFromArray(np.asarray(phantom.image, dtype=np.int16))
    phantom.geometry.apply_to_sitk(image)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def ct_cohort(tmp_path_factory):
    """Three abdomen CT phantoms (seeds no training used) and one file that is not an image."""
    folder = tmp_path_factory.mktemp("cohort-ct")
    make = default_phantom("segmentation")
    for seed in (4101, 4102, 4103):
        write_phantom(folder / f"patient-{seed}.nrrd", make(seed))
    (folder / "broken.nrrd").write_bytes(b"NRRD0004\ntype: what\n\nnot an image")
    return folder


def label_map(path):
    """A .seg.nrrd's header fields and voxel bytes, without pynrrd's "generated on <date>" comment lines: the label
    map byte for byte, whatever the clock said."""
    import nrrd

    data, header = nrrd.read(str(path))
    return {key: str(value) for key, value in header.items()}, data.tobytes()


def read_rows(out):
    with open(out / "results.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def single_run(tmp_path, image, ending=".seg.nrrd"):
    output = tmp_path / f"single-{image.stem}{ending}"
    assert cli(["predict", "segment", "--model", "demo-abdomen-ct", "--input", str(image), "--output", str(output),
                "--device", "cpu", "--quiet"]) == 0
    return label_map(output)


@pytest.mark.slow
def test_local_cohort_writes_what_single_runs_write_and_a_manifest(ct_cohort, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(["predict", "segment", "--model", "demo-abdomen-ct", "--input-dir", str(ct_cohort), "--output-dir",
                str(out), "--device", "cpu", "--quiet"])
    assert code == 1   # one case failed
    rows = read_rows(out)
    assert set(rows) == {"broken", "patient-4101", "patient-4102", "patient-4103"}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"] and not rows["broken"]["outputs"]
    assert "broken" in capsys.readouterr().err
    for seed in (4101, 4102, 4103):
        row = rows[f"patient-{seed}"]
        assert row["status"] == "done" and row["device"] == "cpu" and float(row["seconds"]) > 0
        assert row["outputs"] == f"patient-{seed}.seg.nrrd" and len(row["input_hash"]) == 64
        assert float(row["volume_ml:liver"]) > 100   # an adult liver, in ml
        assert label_map(out / row["outputs"]) == single_run(tmp_path, ct_cohort / f"patient-{seed}.nrrd")
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["case"] for line in lines] == sorted(rows) and not list(out.glob("*.partial"))


@pytest.mark.slow
def test_resume_skips_finished_cases_and_reruns_changed_or_failed_ones(ct_cohort, tmp_path):
    cohort = tmp_path / "in"
    cohort.mkdir()
    for name in ("patient-4101.nrrd", "patient-4102.nrrd"):
        (cohort / name).write_bytes((ct_cohort / name).read_bytes())
    out = tmp_path / "out"
    runner = CaseRunner("demo-abdomen-ct", "segmentation", device="cpu")
    first = run_local(runner, find_cases(cohort), out, quiet=True)
    assert (first.done, first.failed, first.skipped) == (2, 0, 0)
    stamp = (out / "patient-4101.seg.nrrd").stat().st_mtime_ns
    again = run_local(runner, find_cases(cohort), out, resume=True, quiet=True)
    assert (again.done, again.skipped) == (0, 2) and (out / "patient-4101.seg.nrrd").stat().st_mtime_ns == stamp
    (cohort / "patient-4102.nrrd").write_bytes((ct_cohort / "patient-4103.nrrd").read_bytes())   # a new scan
    (out / "patient-4101.seg.nrrd").unlink()                                                      # a lost result
    third = run_local(runner, find_cases(cohort), out, resume=True, quiet=True)
    assert (third.done, third.skipped) == (2, 0) and set(read_rows(out)) == {"patient-4101", "patient-4102"}


def test_case_lists_and_their_mistakes(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "b.nrrd").write_bytes(b"")
    (tmp_path / "a.seg.nrrd").write_bytes(b"")   # a result is not a case
    (tmp_path / "notes.txt").write_text("")
    series = tmp_path / "series 7"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"")
    assert [(c.id, len(c.inputs)) for c in find_cases(tmp_path)] == [("a", 1), ("b", 1), ("series_7", 1)]
    listing = tmp_path / "cases.csv"
    listing.write_text("case,image_1,image_0\nx,b.nrrd,a.nii.gz\n")
    (case,) = find_cases(inputs_csv=listing)
    assert case.id == "x" and [p.name for p in case.inputs] == ["a.nii.gz", "b.nrrd"]   # channels in order
    for text, message in (("name,file\nx,a\n", "needs the columns 'case' and 'image'"),
                          ("case,image\n,a.nrrd\n", "line 2: a case needs its id"),
                          ("case,image\n", "lists no cases")):
        listing.write_text(text)
        with pytest.raises(CaseListError, match=message):
            find_cases(inputs_csv=listing)
    (tmp_path / "A.nrrd").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CaseListError, match="Give either --input-dir"):
        find_cases()
    with pytest.raises(CaseListError, match="No cases in"):
        find_cases(tmp_path / "sub")


def test_cohort_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli(["predict", "segment", "--model", "demo-abdomen-ct", "--input-dir", str(tmp_path)]) == 2
    assert "needs --output-dir" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli(["predict", "segment", "--model", "demo-abdomen-ct", "--input-dir", str(tmp_path),
                "--output-dir", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_landmark_and_classification_cohorts_carry_their_measurements(tmp_path):
    fetal, brain = tmp_path / "fetal", tmp_path / "brain"
    fetal.mkdir()
    brain.mkdir()
    write_phantom(fetal / "f1.nrrd", default_phantom("landmarks")(4201))
    for seed in (4301, 4302):
        write_phantom(brain / f"b{seed}.nrrd", default_phantom("classification")(seed))
    out = tmp_path / "out-fetal"
    assert cli(["predict", "landmarks", "--model", "demo-fetal-landmarks", "--input-dir", str(fetal),
                "--output-dir", str(out), "--device", "cpu", "--quiet"]) == 0
    row = read_rows(out)["f1"]
    assert row["outputs"] == "f1.mrk.json;f1.csv"
    with open(out / "f1.csv", newline="") as stream:
        table = list(csv.reader(stream))
    lengths = {line[0]: float(line[6]) for line in table[1:] if line[1] == "line"}
    assert set(lengths) == {"TCD", "HDV", "ADV"} and float(row["TCD_mm"]) == pytest.approx(lengths["TCD"], abs=1e-3)
    assert 0 <= float(row["TCD_confidence"]) <= 1 and 0 <= float(row["confidence:HDV1"]) <= 1
    out = tmp_path / "out-brain"
    assert cli(["predict", "classify", "--model", "demo-brain-atrophy", "--input-dir", str(brain),
                "--output-dir", str(out), "--device", "cpu", "--quiet"]) == 0
    rows = read_rows(out)
    for row in rows.values():
        assert row["decision"] in ("normal", "atrophy")
        assert float(row["p:normal"]) + float(row["p:atrophy"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_ray_on_this_machine_gives_the_same_files_and_retries_a_killed_workers_case(ct_cohort, tmp_path):
    ray = pytest.importorskip("ray")
    from nnmamba.cohort import run_ray

    local = tmp_path / "local"
    run_local(CaseRunner("demo-abdomen-ct", "segmentation", device="cpu"), find_cases(ct_cohort), local, quiet=True)
    killed = []

    def kill_the_first_worker(case, pid):
        if not killed and case.id != "broken":
            killed.append(case.id)
            os.kill(pid, signal.SIGKILL)   # the worker dies with the case in its hands

    out = tmp_path / "ray"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _node_ip_address="127.0.0.1")   # loopback only
        summary = run_ray("demo-abdomen-ct", "segmentation", find_cases(ct_cohort), out, device="cpu",
                          cpus_per_worker=1, quiet=True, on_submit=kill_the_first_worker)
    finally:
        ray.shutdown()
    assert killed and (summary.done, summary.failed) == (3, 1)
    rows = read_rows(out)
    assert rows[killed[0]]["status"] == "done", rows[killed[0]]   # retried on a fresh worker
    assert rows["broken"]["status"] == "failed"
    for seed in (4101, 4102, 4103):
        name = f"patient-{seed}.seg.nrrd"
        assert label_map(out / name) == label_map(local / name)


@pytest.mark.slow
def test_ctrl_c_stops_a_cohort_with_the_manifest_of_the_finished_cases(ct_cohort, tmp_path):
    import subprocess
    import sys
    import time

    from test_ctrl_c import as_from_a_terminal

    cohort = tmp_path / "in"
    cohort.mkdir()
    for copy in range(4):
        (cohort / f"p{copy}.nrrd").write_bytes((ct_cohort / "patient-4101.nrrd").read_bytes())
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "nnmamba", "predict", "segment", "--model", "demo-abdomen-ct",
                                "--input-dir", str(cohort), "--output-dir", str(out), "--device", "cpu", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + 120
    while not (out / "results.jsonl").is_file():   # the first case finished
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "--resume goes on" in stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert 1 <= len(rows) < 4 and all(row["status"] == "done" for row in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.csv", "results.jsonl"]
                                                           + [row["outputs"] for row in rows])   # nothing partial
