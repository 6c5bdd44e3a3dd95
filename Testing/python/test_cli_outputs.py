"""The command as a new user meets it: output paths checked before any work, the format a file name asks for (or a
refusal), files that are not checkpoints named for what they are, one path for local and --server runs, and a
description with an example in every command's --help."""

import argparse
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from nnmamba.cli import build_parser, main
from nnmamba.formats import read_landmarks, read_segmentation

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
CT = ROOT / "Resources" / "SampleData" / "NNMambaDemoAbdomenCT.nrrd"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "image.nrrd"
    rng = np.random.default_rng(0)
    volume = sitk.GetImageFromArray(rng.normal(100, 20, size=(18, 30, 27)).astype(np.int16))
    volume.SetSpacing((0.8, 0.9, 2.0))
    volume.SetOrigin((10.0, -4.0, 7.0))
    sitk.WriteImage(volume, str(path))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nnmamba: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------- outputs, before any work

def test_bad_output_paths_are_refused_in_a_fraction_of_a_second_with_one_line(tmp_path):
    """Run as a user runs it: the refusal comes before the model, the input or torch are even loaded (the model
    and input named here do not exist, so any work would fail differently)."""
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    cases = {
        tmp_path / "a-folder": "is a folder",
        tmp_path / "a-file" / "out.seg.nrrd": "is a file, not a folder",
        tmp_path / "result.png": "must end with one of them",
        tmp_path / "result.seg": "must end with one of them",
    }
    for output, message in cases.items():
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "nnmamba", "predict", "segment", "--model", "no-such-model",
                                 "--input", "no-such-file.nrrd", "--output", str(output)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert message in one_error_line(result.stderr)
        assert time.perf_counter() - started < 20   # no model, no torch: well under a second when the CPU is free
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]


def test_a_folder_that_refuses_new_files_is_named(capsys, models, image, tmp_path):
    """/proc takes no new files even for root (a chmod'ed folder does not stop root, who runs CI)."""
    code, _, err = run(capsys, "predict", "segment", "--model", models["seg"].root, "--input", image,
                       "--output", "/proc/nnmamba-result.seg.nrrd")
    assert code == 2 and "refuses new files" in one_error_line(err)


@pytest.mark.parametrize("task,output,csv,message", [
    ("landmarks", "points.json", None, "written as .mrk.json"),
    ("classify", "result.csv", None, "written as .json"),
    ("classify", "result.json", "table.txt", "ending with .csv"),
])
def test_other_tasks_refuse_endings_they_do_not_write(capsys, models, image, tmp_path, task, output, csv, message):
    model = {"landmarks": models["lm"], "classify": models["cls"]}[task]
    extra = ["--csv", tmp_path / csv] if csv else []
    code, _, err = run(capsys, "predict", task, "--model", model.root, "--input", image, "--output",
                       tmp_path / output, *extra)
    assert code == 2 and message in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def file_format(path):
    """The format of a file told by its bytes (not its name)."""
    import gzip

    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "NIfTI"
    if data.startswith(b"NRRD"):
        return "NRRD"
    if data.startswith(b"ObjectType = Image"):
        return "MetaImage"
    return "unknown"


@pytest.mark.parametrize("ending,expected", [(".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"),
                                             (".mha", "MetaImage")])
def test_a_label_map_is_written_in_the_format_its_name_asks_for(capsys, models, image, tmp_path, ending, expected):
    reference = tmp_path / "reference.seg.nrrd"
    assert run(capsys, "predict", "segment", "--model", models["seg"].root, "--input", image, "--output", reference,
               "--quiet")[0] == 0
    output = tmp_path / f"labels{ending}"
    code, out, err = run(capsys, "predict", "segment", "--model", models["seg"].root, "--input", image,
                         "--output", output, "--quiet")
    assert code == 0, err
    assert "label values: 1 structure 1, 2 structure 2" in out
    assert file_format(output) == expected
    labels = sitk.ReadImage(str(output))
    assert labels.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(labels.GetSpacing(), (0.8, 0.9, 2.0), rtol=1e-6)
    np.testing.assert_allclose(labels.GetOrigin(), (10.0, -4.0, 7.0), rtol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), read_segmentation(reference).labels)


# --------------------------------------------------------------------------- local and remote: one path

@pytest.fixture(scope="module")
def server(models):
    pytest.importorskip("fastapi")
    from nnmamba.client_local import LocalServer

    with LocalServer(device="cpu", models_dir=models["root"]) as running:
        yield running


def test_every_task_gives_the_same_files_here_and_on_a_server(capsys, models, image, server, tmp_path):
    remote = ["--server", server.url, "--token", server.token]
    outputs = {}
    for where, extra, ids in (("here", [], {k: models[k].root for k in ("seg", "lm", "cls")}),
                              ("server", remote, {"seg": "test-seg", "lm": "test-landmarks", "cls": "test-cls"})):
        folder = tmp_path / where
        commands = [["segment", "--model", ids["seg"], "--output", folder / "seg.seg.nrrd"],
                    ["segment", "--model", ids["seg"], "--output", folder / "labels.nii.gz"],
                    ["landmarks", "--model", ids["lm"], "--output", folder / "lm.mrk.json", "--csv",
                     folder / "lm.csv"],
                    ["classify", "--model", ids["cls"], "--output", folder / "cls.json", "--csv", folder / "cls.csv"]]
        for command in commands:
            code, _, err = run(capsys, "predict", *command, "--input", image, "--quiet", *extra)
            assert code == 0, err
        outputs[where] = folder
    here, there = outputs["here"], outputs["server"]
    np.testing.assert_array_equal(read_segmentation(here / "seg.seg.nrrd").labels,
                                  read_segmentation(there / "seg.seg.nrrd").labels)
    assert [s["name"] for s in read_segmentation(there / "seg.seg.nrrd").segments] == ["structure 1", "structure 2"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(here / "labels.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(there / "labels.nii.gz"))))
    assert read_landmarks(here / "lm.mrk.json").points == read_landmarks(there / "lm.mrk.json").points
    assert (here / "lm.csv").read_text() == (there / "lm.csv").read_text()
    header, *rows = (here / "lm.csv").read_text().splitlines()
    assert header == "name,kind,x_lps,y_lps,z_lps,confidence,length_mm,from,to"
    assert all(0 <= float(row.split(",")[5]) <= 1 for row in rows if ",point," in row)   # a number, not text
    assert rows[-1].startswith("ADV,line,") and rows[-1].endswith(",ADV1,ADV2")
    documents = [json.loads((folder / "cls.json").read_text()) for folder in (here, there)]
    assert documents[0]["probabilities"] == pytest.approx(documents[1]["probabilities"])
    assert documents[0]["input"] == documents[1]["input"] == str(image)


# -------------------------------------------------------------------------------------- not a checkpoint

@pytest.mark.parametrize("content,message", [
    (b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>",
     "an HTML page, not a checkpoint: the download failed"),
    (b"  <html><body>Quota exceeded</body></html>", "an HTML page"),
    (b"hello, I am a text file\n", "a text file, not a checkpoint"),
    (b'{"id": "x"}', "a JSON text file"),
    (b"", "an empty file"),
    (bytes(range(1, 256)) * 4, "neither a zip archive nor a pickle"),
    (b"PK\x03\x04 broken zip", "not a readable PyTorch checkpoint"),
])
def test_inspect_names_what_a_non_checkpoint_is_and_never_suggests_lifting_safety(capsys, tmp_path, content,
                                                                                   message):
    path = tmp_path / "model_final_checkpoint.model"
    path.write_bytes(content)
    code, _, err = run(capsys, "inspect", path)
    assert code == 2
    line = one_error_line(err)
    assert message in line
    assert "weights_only" not in line and "Weights only" not in line


def test_a_plain_pickle_is_named_as_one(capsys, tmp_path):
    import pickle

    path = tmp_path / "plans.model"
    path.write_bytes(pickle.dumps({"plans_per_stage": {}}, protocol=4))
    code, _, err = run(capsys, "inspect", path)
    assert code == 2 and "a pickle file, not a PyTorch checkpoint" in one_error_line(err)


# ---------------------------------------------------------------------------------------------------- help

def all_commands(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from all_commands(child, path + (name,))


def test_every_command_has_a_description_and_an_example():
    commands = list(all_commands(build_parser()))
    assert len(commands) >= 20
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description and len(parser.description) > 30, path
        assert re.search(r"^examples?:\n  nnmamba ", text, re.MULTILINE), (path, text)
        for line in parser.epilog.splitlines()[1:]:
            command = line.split("#")[0].split()
            assert command[0] == "nnmamba"
            if path and command[1:1 + len(path)] != list(path):
                raise AssertionError(f"the example of {' '.join(path)} runs another command: {line}")
            build_parser().parse_args(command[1:])   # the example's arguments are valid


def test_help_of_a_subcommand_through_the_real_command():
    result = subprocess.run([sys.executable, "-m", "nnmamba", "predict", "landmarks", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "markups file" in result.stdout and "example:\n  nnmamba predict landmarks --model demo-fetal" in \
        result.stdout


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(capsys, monkeypatch):
    import nnmamba.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_models_presets", broken)
    monkeypatch.delenv("NNMAMBA_DEBUG", raising=False)
    code, _, err = run(capsys, "models", "presets")
    assert code == 1 and "this is a bug" in one_error_line(err)
