"""``medsweep predict``: the run's own preprocessing (same probabilities as its evaluation), the
tuned thresholds, fold ensembles, TTA, DICOM, and an error row per unusable file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from layouts import write_dicom
from PIL import Image
from predict_runs import CLASSES, train_study

from medsweep.cli import main
from medsweep.predictions import read_predictions

POS = f"prob/{CLASSES[1]}"


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> dict[str, Path]:
    """Two evaluated k-fold runs of one configuration on a binary image folder."""
    return train_study(tmp_path_factory.mktemp("predict"))


def saved(run_dir: Path) -> pd.DataFrame:
    """The run's evaluation predictions (val and test), keyed by resolved file path."""
    frame = read_predictions(run_dir / "predictions.parquet")
    frame["key"] = [str(Path(i).resolve()) for i in frame["id"]]
    return frame


def predicted(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    frame["key"] = [str(Path(f).resolve()) for f in frame["file"]]
    return frame


def tuned_threshold(eval_dir: Path) -> float:
    return json.loads((eval_dir / "thresholds.json").read_text())["thresholds"][CLASSES[1]]


def test_folder_predictions_equal_the_evaluation(study, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(study["fold0"]), str(study["data"]), "--out", str(out)]) == 0
    rows = predicted(out)
    images = sorted(study["data"].rglob("*.png"))
    assert len(rows) == len(images) == 40
    assert set(rows["key"]) == {str(p.resolve()) for p in images}
    assert (rows["status"] == "ok").all()
    evaluation = saved(study["fold0"])
    record = json.loads((study["fold0"] / "metrics.json").read_text())
    assert len(evaluation) == record["sizes"]["val"] + record["sizes"]["test"]
    both = evaluation.merge(rows, on="key", suffixes=("_eval", ""))
    assert len(both) == len(evaluation)
    for name in CLASSES:
        np.testing.assert_allclose(both[f"prob/{name}"], both[f"prob/{name}_eval"], atol=1e-5)
    # the decision: positive when p >= the threshold chosen on validation by medsweep evaluate
    t = tuned_threshold(study["fold0"] / "eval")
    expected = np.where(rows[POS] >= t, CLASSES[1], CLASSES[0])
    assert rows["predicted"].tolist() == expected.tolist()
    assert f"{t:.4g}" in capsys.readouterr().out


def test_fold_ensemble_averages_the_folds(study, tmp_path):
    out = tmp_path / "ensemble.csv"
    assert main(["predict", str(study["multirun"]), str(study["data"]), "--out", str(out)]) == 0
    rows = predicted(out)
    a, b = saved(study["fold0"]), saved(study["fold1"])
    test = a[a["part"] == "test"].merge(b[b["part"] == "test"], on="key", suffixes=("_a", "_b"))
    assert len(test) > 0
    both = test.merge(rows, on="key")
    np.testing.assert_allclose(both[POS], (both[f"{POS}_a"] + both[f"{POS}_b"]) / 2, atol=1e-5)
    # the ensemble's own threshold (multirun/eval/ensemble_*/thresholds.json)
    (eval_dir,) = [
        p.parent for p in (study["multirun"] / "eval").glob("ensemble_*/thresholds.json")
    ]
    t = tuned_threshold(eval_dir)
    assert rows["predicted"].tolist() == np.where(rows[POS] >= t, *CLASSES[::-1]).tolist()


def test_unusable_files_get_error_rows_and_the_batch_goes_on(study, tmp_path):
    good = sorted((study["data"] / CLASSES[1]).glob("*.png"))[0]
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(good.read_bytes())
    (folder / "b_text.png").write_text("not pixels")
    (folder / "c_cut.png").write_bytes(good.read_bytes()[:60])
    (folder / "ignored.txt").write_text("a folder's non-image files are not inputs")
    out = tmp_path / "out.csv"
    args = ["predict", str(study["fold0"]), str(folder), str(tmp_path / "missing.png")]
    assert main([*args, "--out", str(out)]) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    assert [Path(f).name for f in rows["file"]] == [
        "a_good.png",
        "b_text.png",
        "c_cut.png",
        "missing.png",
    ]
    assert rows["status"].tolist() == ["ok", "error", "error", "error"]
    assert rows["error"][1].startswith("not an image")
    assert rows["error"][2].startswith(("truncated", "corrupt"))
    assert rows["error"][3].startswith("missing file")
    assert rows["predicted"][0] in CLASSES and rows["predicted"][1:].tolist() == ["", "", ""]
    evaluation = saved(study["fold0"]).set_index("key")
    if str(good.resolve()) in evaluation.index:
        assert abs(float(rows[POS][0]) - evaluation.loc[str(good.resolve()), POS]) < 1e-5


def test_oversized_images_are_refused_before_decoding(study, tmp_path):
    out = tmp_path / "out.csv"
    image = sorted(study["data"].rglob("*.png"))[0]  # 8 x 8 = 64 pixels
    assert (
        main(["predict", str(study["fold0"]), str(image), "--out", str(out), "--max-pixels", "63"])
        == 1
    )
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "error" and row["error"].startswith("too large: 8 x 8 = 64 pixels")


def test_tta_is_the_mean_of_the_image_and_its_mirror(study, tmp_path):
    files = sorted(study["data"].rglob("*.png"))[:6]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in files:
        Image.fromarray(np.asarray(Image.open(f))[:, ::-1]).save(mirror / f.name)
    runs = []
    for args in (["--tta", *map(str, files)], list(map(str, files)), [str(mirror)]):
        out = tmp_path / f"out{len(runs)}.csv"
        assert main(["predict", str(study["fold0"]), *args, "--out", str(out)]) == 0
        runs.append(
            pd.read_csv(out).sort_values("file", key=lambda s: s.map(lambda f: Path(f).name))
        )
    tta, plain, flipped = (r[POS].to_numpy() for r in runs)
    np.testing.assert_allclose(tta, (plain + flipped) / 2, atol=1e-6)
    assert np.abs(plain - flipped).max() > 0  # the mirror is another input


def test_dicom_slices_read_as_the_same_pixels(study, tmp_path):
    # slices spanning 0..255: their own value range (what a slice without a window gets) maps 1:1
    files = [
        f for f in sorted(study["data"].rglob("*.png")) if np.ptp(np.asarray(Image.open(f))) == 255
    ][:3]
    assert len(files) == 3
    for f in files:
        pixels = np.asarray(Image.open(f)).astype(np.int16)
        write_dicom(tmp_path / "dicom" / f"{f.parent.name}_{f.stem}.dcm", pixels)
    png_out, dcm_out = tmp_path / "png.csv", tmp_path / "dcm.csv"
    assert main(["predict", str(study["fold0"]), *map(str, files), "--out", str(png_out)]) == 0
    assert (
        main(["predict", str(study["fold0"]), str(tmp_path / "dicom"), "--out", str(dcm_out)]) == 0
    )
    png, dcm = pd.read_csv(png_out), pd.read_csv(dcm_out)
    assert (dcm["status"] == "ok").all() and len(dcm) == 3
    np.testing.assert_allclose(dcm[POS], png[POS], atol=1e-6)


def test_model_choice_in_a_multirun_folder(study, tmp_path, capsys):
    from medsweep.predict import run_choices, select_choice

    choices = run_choices(study["multirun"])
    assert [c.kind for c in choices] == ["ensemble", "run", "run"]
    assert select_choice(choices).kind == "ensemble"
    assert select_choice(choices, "fold1").run_dirs == [study["fold1"]]
    out = tmp_path / "out.csv"
    image = str(sorted(study["data"].rglob("*.png"))[0])
    args = ["predict", str(study["multirun"]), image, "--out", str(out)]
    assert main([*args, "--model", "nothing"]) == 2
    message = capsys.readouterr().err
    assert "--model 'nothing' is not one of" in message and "fold0" in message
    assert main([*args, "--model", "fold1"]) == 0
    assert main(["predict", str(tmp_path / "nowhere"), image, "--out", str(out)]) == 2


def test_colour_and_alpha_images_are_converted_with_a_note(study, tmp_path):
    from medsweep.predict import load_predictor

    predictor = load_predictor(study["fold0"])
    gray = np.asarray(Image.open(sorted(study["data"].rglob("*.png"))[0]))
    rgba = np.stack([gray, gray // 2, 255 - gray, np.full_like(gray, 255)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "colour.png")
    image = predictor.read(tmp_path / "colour.png")
    assert image.mode == "RGBA"
    assert any("transparency" in n for n in image.notes)
    assert any("converted to gray" in n and "trained on L images" in n for n in image.notes)
    # fully opaque: composited over black leaves the colours, and the gray conversion is the
    # run's (ITU-R 601 weights), so the probabilities equal those of that gray image
    weights = np.array([0.299, 0.587, 0.114])
    by_hand = np.clip(np.rint(rgba[..., :3].astype(np.float64) @ weights), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(
        predictor.probabilities([image.array]), predictor.probabilities([by_hand]), atol=1e-6
    )
    assert predictor.read(sorted(study["data"].rglob("*.png"))[0]).notes == []


class _Marker:
    """Pickled into a checkpoint: unpickling it would create ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_holding_code_is_refused(study, tmp_path, capsys):
    import shutil

    import torch

    run_dir = tmp_path / "run"
    shutil.copytree(study["fold0"], run_dir)
    marker = tmp_path / "code_ran"
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    torch.save({**state, "extra": _Marker(marker)}, run_dir / "checkpoints" / "best.ckpt")
    image = str(sorted(study["data"].rglob("*.png"))[0])
    assert main(["predict", str(run_dir), image, "--out", str(tmp_path / "out.csv")]) == 2
    assert "is not a weights-only checkpoint" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.csv").exists()
