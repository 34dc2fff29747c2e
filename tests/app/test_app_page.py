"""The inference page's logic through Streamlit's AppTest: model choice, uploads, the decision at
the threshold, Grad-CAM, messages for unusable input, and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from predict_runs import CLASSES

from medsweep.predictions import read_predictions

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from medsweep.app import PAGE  # noqa: E402

POS = f"prob/{CLASSES[1]}"


def open_page(monkeypatch, run: Path | None, max_pixels: int | None = None) -> AppTest:
    """The page as the launcher would start it on ``run``, after its first run."""
    if run is None:
        monkeypatch.delenv("MEDSWEEP_APP_RUN", raising=False)
    else:
        monkeypatch.setenv("MEDSWEEP_APP_RUN", str(run))
    if max_pixels is None:
        monkeypatch.delenv("MEDSWEEP_APP_MAX_PIXELS", raising=False)
    else:
        monkeypatch.setenv("MEDSWEEP_APP_MAX_PIXELS", str(max_pixels))
    at = AppTest.from_file(str(PAGE), default_timeout=180)
    at.run()
    assert not at.exception
    return at


def choose(at: AppTest, prefix: str) -> AppTest:
    box = at.sidebar.selectbox[0]
    (label,) = [o for o in box.options if o.startswith(prefix)]
    box.select(label).run()
    assert not at.exception
    return at


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.file_uploader[0].set_value(
        [(name, data, "application/octet-stream") for name, data in files]
    )
    at.run()
    assert not at.exception
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def evaluated_image(run_dir: Path, part: str = "test") -> tuple[Path, float]:
    """An image of the run's ``part`` and the probability its evaluation gave it."""
    frame = read_predictions(run_dir / "predictions.parquet")
    row = frame[frame["part"] == part].iloc[0]
    return Path(row["id"]), float(row[POS])


def tuned(eval_dir: Path) -> float:
    return json.loads((eval_dir / "thresholds.json").read_text())["thresholds"][CLASSES[1]]


def test_no_run_or_a_missing_folder_gives_a_message(monkeypatch, tmp_path):
    at = open_page(monkeypatch, None)
    assert "No run chosen" in at.error[0].value
    assert not at.file_uploader
    at = open_page(monkeypatch, tmp_path / "nowhere")
    assert "no such folder" in at.error[0].value
    (tmp_path / "empty").mkdir()
    at = open_page(monkeypatch, tmp_path / "empty")
    assert "No finished run under" in at.error[0].value


def test_choose_a_run_upload_an_image_and_see_the_decision(monkeypatch, app_study):
    at = open_page(monkeypatch, app_study["multirun"])
    assert "No model chosen" in at.info[0].value and not at.file_uploader
    assert len(at.sidebar.selectbox[0].options) == 3  # the ensemble and both runs
    choose(at, "run fold0")
    t = tuned(app_study["fold0"] / "eval")
    (slider,) = at.sidebar.slider
    assert slider.value == pytest.approx(t)
    image, p = evaluated_image(app_study["fold0"])
    upload(at, (image.name, image.read_bytes()))
    expected = CLASSES[1] if p >= t else CLASSES[0]
    (verdict,) = texts(at.success)
    assert verdict.startswith(f"Predicted: {expected} (p({CLASSES[1]}) = {p:.3f}")
    assert f"threshold {t:.3f}" in verdict
    assert any(f"p({CLASSES[1]}) = {p:.3f}" in m for m in texts(at.markdown))
    assert any(f"p({CLASSES[0]}) = {1 - p:.3f}" in m for m in texts(at.markdown))
    assert not at.error and not at.warning
    # the slider moves the decision: everything is positive at 0, and p < 1 is negative at 1
    slider.set_value(0.0).run()
    assert texts(at.success)[0].startswith(f"Predicted: {CLASSES[1]}")
    assert p < 1
    at.sidebar.slider[0].set_value(1.0).run()
    assert texts(at.success)[0].startswith(f"Predicted: {CLASSES[0]}")


def test_the_ensemble_averages_its_folds(monkeypatch, app_study):
    at = choose(open_page(monkeypatch, app_study["multirun"]), "ensemble")
    image, p0 = evaluated_image(app_study["fold0"])
    frame = read_predictions(app_study["fold1"] / "predictions.parquet")
    (p1,) = frame.loc[frame["id"] == str(image), POS]
    upload(at, (image.name, image.read_bytes()))
    assert f"p({CLASSES[1]}) = {(p0 + p1) / 2:.3f}" in texts(at.success)[0]
    card = "\n".join(str(t.value) for t in at.table)
    assert "fold ensemble: mean of 2 runs" in card


def test_unusable_uploads_give_clear_messages(monkeypatch, app_study, tmp_path):
    good = sorted((app_study["data"] / CLASSES[0]).glob("*.png"))[0]
    gray = np.asarray(Image.open(good))
    rgba = np.stack([gray, 255 - gray, gray // 2, np.full_like(gray, 200)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "colour.png")
    at = choose(open_page(monkeypatch, app_study["multirun"]), "run fold0")
    upload(
        at,
        ("notes.txt", b"a text file, not an image"),
        ("empty.png", b""),
        ("cut.png", good.read_bytes()[:60]),
        ("colour.png", (tmp_path / "colour.png").read_bytes()),
    )
    errors = texts(at.error)
    assert len(errors) == 3
    assert errors[0].startswith("notes.txt is not an image this model can read")
    assert errors[1] == "empty.png is empty (0 bytes)."
    assert errors[2].startswith("cut.png could not be decoded: the file is")
    warnings = texts(at.warning)
    assert any("colour.png" in w and "transparency" in w for w in warnings)
    assert any("converted to gray" in w and "trained on L images" in w for w in warnings)
    assert len(at.success) == 1  # the colour image is still predicted, after its conversion
    at = choose(open_page(monkeypatch, app_study["multirun"], max_pixels=63), "run fold0")
    upload(at, (good.name, good.read_bytes()))
    (error,) = texts(at.error)
    assert error.startswith(f"{good.name} is too large: 8 x 8 = 64 pixels; the limit is 63")


def test_model_card_from_the_run_files(monkeypatch, app_study):
    run_dir = app_study["fold0"]
    at = choose(open_page(monkeypatch, app_study["multirun"]), "run fold0")
    tables = [t.value for t in at.table]
    facts, metrics = tables[0], tables[1]
    assert facts.loc["classes"].iloc[0] == ", ".join(CLASSES)
    record = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    auroc = summary["test"]["auroc"]
    assert metrics.loc["auroc", "validation"] == f"{record['val']['auroc']:.3f}"
    assert metrics.loc["auroc", "test"] == f"{auroc['estimate']:.3f}"
    assert metrics.loc["auroc", "test 95% CI"] == f"[{auroc['ci_low']:.3f}, {auroc['ci_high']:.3f}]"
    calibration = json.loads((run_dir / "eval" / "calibration.json").read_text())
    assert tables[2].iloc[0, 0] == f"{calibration['temperature']:.3f}"
    threshold = tables[3]
    assert f"{tuned(run_dir / 'eval'):.4g}" in threshold.loc["thresholds"].iloc[0]
    assert threshold.loc["method"].iloc[0] == "max_f1 (chosen on val)"


def test_grad_cam_overlay_is_shown(monkeypatch, app_study):
    from medsweep.app.uploads import analyse_upload
    from medsweep.predict import load_predictor

    image, _ = evaluated_image(app_study["fold0"])
    predictor = load_predictor(app_study["fold0"])
    result = analyse_upload(predictor, image.name, image.read_bytes(), predictor.thresholds)
    assert result.error is None and result.overlay is not None
    assert result.overlay.shape == result.image.shape == (256, 256, 3)
    assert not np.array_equal(result.overlay, result.image)
    off = analyse_upload(predictor, image.name, image.read_bytes(), {}, cam=False)
    assert off.overlay is None and off.verdict.endswith("threshold 0.500)")


def test_the_launcher_serves_on_localhost_only():
    import argparse

    from medsweep.app.__main__ import main, streamlit_command
    from medsweep.predict import DEFAULT_MAX_PIXELS

    args = argparse.Namespace(
        run="outputs/x",
        host="127.0.0.1",
        port=8600,
        max_pixels=DEFAULT_MAX_PIXELS,
        max_upload_mb=50,
    )
    command = streamlit_command(args)
    pairs = dict(zip(command[::1], command[1::1]))
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--server.port"] == "8600"
    assert pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--client.showErrorDetails"] == "none"
    assert command[-2:] == ["--run", "outputs/x"]
    with pytest.raises(SystemExit):
        main(["--help"])
