"""`nnmamba predict ...`: real files in, Slicer-native files out, and one clear line for each bad input."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnmamba.cli import main
from nnmamba.formats import read_landmarks, read_segmentation

from model_packages import classification_package, landmark_package, segmentation_package


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"seg": segmentation_package(root / "seg"), "lm": landmark_package(root / "lm"),
            "cls": classification_package(root / "cls"),
            "seg2": segmentation_package(root / "seg2", in_channels=2, model_id="two-channels")}


def write(path, array, spacing=(0.8, 0.9, 2.0), origin=(10.0, -4.0, 7.0)):
    image = sitk.GetImageFromArray(np.asarray(array), isVector=False)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    return write(tmp_path / "image.nrrd", rng.normal(100, 20, size=(18, 30, 27)).astype(np.int16))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_writes_a_segmentation_on_the_input_grid(capsys, models, image, tmp_path):
    output = tmp_path / "out" / "result.seg.nrrd"
    code, out, err = run(capsys, "predict", "segment", "--model", models["seg"].root, "--input", image,
                         "--output", output, "--quiet")
    assert code == 0, err
    seg = read_segmentation(output)
    assert seg.labels.shape == (18, 30, 27)
    np.testing.assert_allclose(seg.geometry.spacing, (0.8, 0.9, 2.0))
    np.testing.assert_allclose(seg.geometry.origin, (10.0, -4.0, 7.0))
    assert [s["name"] for s in seg.segments] == ["structure 1", "structure 2"]
    assert "structures found" in out


def test_click_writes_the_structure_with_its_offset(capsys, models, image, tmp_path):
    output = tmp_path / "click.seg.nrrd"
    argv = ["predict", "click", "--model", models["seg"].root, "--input", image, "--output", output]
    code, out, err = run(capsys, *argv, "--point", 20, 5, 25)
    if code != 0:  # the random network may see background there: then the message must say so
        assert "background" in err and not output.exists()
        return
    seg = read_segmentation(output)
    assert seg.labels.sum() > 0 and seg.segments[0]["name"].startswith("structure")
    code, _, err = run(capsys, *argv, "--point", 500, 5, 25)
    assert code == 2 and "outside the volume" in err


def test_landmarks_write_a_markups_file_with_the_three_lines(capsys, models, image, tmp_path):
    output, table = tmp_path / "landmarks.mrk.json", tmp_path / "landmarks.csv"
    code, out, err = run(capsys, "predict", "landmarks", "--model", models["lm"].root, "--input", image,
                         "--output", output, "--csv", table, "--quiet")
    assert code == 0, err
    landmarks = read_landmarks(output)
    assert [p["label"] for p in landmarks.points] == ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
    assert [line["name"] for line in landmarks.lines] == ["TCD", "HDV", "ADV"]
    assert "TCD:" in out and table.read_text().count("\n") == 10


def test_classify_writes_json_and_csv(capsys, models, image, tmp_path):
    output, table = tmp_path / "result.json", tmp_path / "result.csv"
    code, out, err = run(capsys, "predict", "classify", "--model", models["cls"].root, "--input", image,
                         "--output", output, "--csv", table)
    assert code == 0, err
    document = json.loads(output.read_text())
    assert document["classes"] == ["NC", "AD"] and document["decision"] in ("NC", "AD")
    assert sum(document["probabilities"]) == pytest.approx(1.0)
    assert document["model"]["id"] == "test-cls" and table.exists()


def bad_input(kind, tmp_path, models):
    """(arguments, expected message) for each bad input the CLI must explain in one line."""
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(12, 20, 20)).astype(np.float32)
    if kind == "missing file":
        return ["--input", tmp_path / "nope.nrrd"], "not found|does not exist|No such"
    if kind == "2D image":
        return ["--input", write(tmp_path / "flat.nrrd", volume[0])], "2D|two-dimensional|3D"
    if kind == "4D image":
        four = sitk.JoinSeries([sitk.GetImageFromArray(volume)] * 3)
        sitk.WriteImage(four, str(tmp_path / "four.nrrd"))
        return ["--input", tmp_path / "four.nrrd"], "4D|channel"
    if kind == "NaN voxels":
        volume[3, 4, 5] = np.nan
        return ["--input", write(tmp_path / "nan.nrrd", volume)], "NaN"
    if kind == "Inf voxels":
        volume[3, 4, 5] = np.inf
        return ["--input", write(tmp_path / "inf.nrrd", volume)], "infinite|Inf"
    if kind == "constant image":
        return ["--input", write(tmp_path / "constant.nrrd", np.full((12, 20, 20), 7, np.int16))], "constant"
    if kind == "wrong channel count":
        return ["--model", models["seg2"].root, "--input", write(tmp_path / "one.nrrd", volume)], "channel"
    if kind == "tampered weights":
        import shutil

        copy = tmp_path / "tampered"
        shutil.copytree(models["seg"].root, copy)
        weights = copy / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        return ["--model", copy, "--input", write(tmp_path / "ok.nrrd", volume)], "modified|corrupt"
    if kind == "corrupt model.json":
        import shutil

        copy = tmp_path / "corrupt"
        shutil.copytree(models["seg"].root, copy)
        (copy / "model.json").write_text("{ not json")
        return ["--model", copy, "--input", write(tmp_path / "ok.nrrd", volume)], "not valid JSON"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing file", "2D image", "4D image", "NaN voxels", "Inf voxels",
                                  "constant image", "wrong channel count", "tampered weights",
                                  "corrupt model.json"])
def test_each_bad_input_is_one_clear_line_and_no_output(capsys, models, tmp_path, kind):
    arguments, message = bad_input(kind, tmp_path, models)
    if "--model" not in arguments:
        arguments = ["--model", models["seg"].root, *arguments]
    output = tmp_path / "result.seg.nrrd"
    code, out, err = run(capsys, "predict", "segment", *arguments, "--output", output, "--quiet")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("nnmamba: error:")]
    assert len(lines) == 1, err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not output.exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_model_of_another_task_is_refused(capsys, models, image, tmp_path):
    code, _, err = run(capsys, "predict", "landmarks", "--model", models["seg"].root, "--input", image,
                       "--output", tmp_path / "x.mrk.json")
    assert code == 2 and "segmentation model" in err


# Ctrl-C at every moment of a real process: test_ctrl_c.py
