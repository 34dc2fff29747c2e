"""The inference page (a Streamlit script): choose a run or fold ensemble, upload images, see the
class probabilities, the decision at an adjustable threshold, Grad-CAM and the model card.

Started by ``python -m medsweep.app RUN`` (``make app RUN=...``), which passes ``--run`` and
``--max-pixels`` after ``--``; ``MEDSWEEP_APP_RUN`` and ``MEDSWEEP_APP_MAX_PIXELS`` are read when
they are absent (Streamlit's AppTest).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from medsweep.app.card import model_card
from medsweep.app.uploads import analyse_upload, probability_rows
from medsweep.predict import DEFAULT_MAX_PIXELS, Choice, Predictor, load_predictor, run_choices

NO_RUN = (
    "No run chosen. Start the app on a trained run or a multirun folder: "
    "`make app RUN=outputs/runs/<date>/<time>` (or `python -m medsweep.app <folder>`)."
)


@dataclass
class Settings:
    """Where the runs are and the largest image accepted."""

    run: str | None
    max_pixels: int


def settings(argv: list[str] | None = None) -> Settings:
    """Settings from the script's arguments, else from the environment."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--run")
    parser.add_argument("--max-pixels", type=int)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    run = args.run or os.environ.get("MEDSWEEP_APP_RUN") or None
    limit = args.max_pixels or int(os.environ.get("MEDSWEEP_APP_MAX_PIXELS") or DEFAULT_MAX_PIXELS)
    return Settings(run, limit)


@st.cache_resource(show_spinner="Loading the model ...")
def _load(label: str, kind: str, run_dirs: tuple[str, ...], root: str):
    choice = Choice(label, kind, [Path(d) for d in run_dirs], Path(root))
    # one upload at a time per model: Grad-CAM hooks the shared network
    return load_predictor(choice), threading.Lock()


def threshold_controls(predictor: Predictor) -> dict[str, float]:
    """Sidebar sliders for the thresholds (default: the run's tuned ones); argmax has none."""
    task, classes, tuned = predictor.task, predictor.classes, predictor.thresholds
    key = predictor.choice.label
    source = "tuned on validation" if predictor.threshold_info else "default, none tuned"
    if task == "multiclass" and not tuned:
        st.sidebar.caption("Decision: the class of highest probability (argmax).")
        return {}
    names = [classes[1]] if task == "binary" else list(classes)
    chosen = {}
    for name in names:
        default = float(tuned.get(name, 0.5))
        chosen[name] = st.sidebar.slider(
            f"Threshold for {name} ({source}: {default:.3f})",
            min_value=0.0,
            max_value=1.0,
            value=default,
            step=0.001,
            format="%.3f",
            key=f"threshold:{key}:{name}",
        )
    return chosen


def render_card(predictor: Predictor) -> None:
    """The model card of the chosen model."""
    card = model_card(predictor)
    st.subheader(f"Model card: {card.title}")
    st.table(pd.DataFrame({"": list(card.facts.values())}, index=list(card.facts)))
    st.markdown("**Metrics** (validation and test, best checkpoint)")
    st.table(card.metrics.set_index("metric"))
    if card.calibration:
        st.markdown("**Calibration**")
        st.table(pd.DataFrame({"": list(card.calibration.values())}, index=list(card.calibration)))
    st.markdown("**Decision threshold**")
    st.table(pd.DataFrame({"": list(card.threshold.values())}, index=list(card.threshold)))
    for note in card.notes:
        st.info(note)


def probability_chart(rows: list[dict], predictor: Predictor, thresholds: dict[str, float]):
    """Horizontal bars of the class probabilities on 0..1, with the threshold(s) as red ticks."""
    import altair as alt

    frame = pd.DataFrame(rows)
    if predictor.task == "binary":
        frame["threshold"] = [None, thresholds.get(predictor.classes[1], 0.5)]
    elif thresholds:
        frame["threshold"] = [thresholds.get(c) for c in frame["class"]]
    y = alt.Y("class:N", sort=list(predictor.classes), title=None)
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
            y=y,
            tooltip=["class", alt.Tooltip("probability:Q", format=".3f")],
        )
    )
    if "threshold" not in frame:
        return bars
    ticks = (
        alt.Chart(frame.dropna(subset=["threshold"]))
        .mark_tick(color="#d62728", thickness=3, size=26)
        .encode(x="threshold:Q", y=y, tooltip=[alt.Tooltip("threshold:Q", format=".3f")])
    )
    return bars + ticks


def render_upload(predictor: Predictor, lock, upload, thresholds, tta, cam, max_pixels) -> None:
    """One uploaded file: its message, or its decision, probabilities and images."""
    st.markdown(f"#### {upload.name}")
    try:
        with lock:
            result = analyse_upload(
                predictor, upload.name, upload.getvalue(), thresholds, tta, cam, max_pixels
            )
    except Exception as err:  # never a traceback in the page
        st.error(f"{upload.name} could not be predicted: {type(err).__name__}: {err}")
        return
    if result.error:
        st.error(result.error)
        return
    for note in result.notes:
        st.warning(f"{upload.name}: {note}")
    st.success(result.verdict)
    left, right = st.columns(2)
    with left:
        rows = probability_rows(result, predictor.classes)
        st.altair_chart(probability_chart(rows, predictor, thresholds), width="stretch")
        st.markdown("  \n".join(f"p({r['class']}) = {r['probability']:.3f}" for r in rows))
    with right:
        images = [result.image] + ([result.overlay] if result.overlay is not None else [])
        captions = ["image"] + (["Grad-CAM"] if result.overlay is not None else [])
        st.image(images, caption=captions, width=220)


def main() -> None:
    """The page."""
    st.set_page_config(page_title="medsweep inference", layout="wide")
    st.title("medsweep inference")
    s = settings()
    if not s.run:
        st.error(NO_RUN)
        return
    try:
        choices = run_choices(s.run)
    except FileNotFoundError as err:
        st.error(f"{err}. {NO_RUN}")
        return
    if not choices:
        st.error(
            f"No finished run under {s.run}: a run folder holds metrics.json (status ok) and "
            "its best checkpoint."
        )
        return
    labels = [c.label for c in choices]
    picked = st.sidebar.selectbox(
        "Model",
        labels,
        index=0 if len(labels) == 1 else None,
        placeholder="Choose a run or a fold ensemble",
    )
    if picked is None:
        st.info("No model chosen yet: choose a run or a fold ensemble in the sidebar.")
        return
    choice = choices[labels.index(picked)]
    try:
        predictor, lock = _load(
            choice.label, choice.kind, tuple(str(d) for d in choice.run_dirs), str(choice.root)
        )
    except Exception as err:  # a missing checkpoint or data source: a message, not a traceback
        st.error(f"The model {choice.label} could not be loaded: {type(err).__name__}: {err}")
        return
    thresholds = threshold_controls(predictor)
    tta = st.sidebar.checkbox("Test-time augmentation (flips)", value=False)
    cam = st.sidebar.checkbox("Grad-CAM overlay", value=True)
    predict_tab, card_tab = st.tabs(["Predict", "Model card"])
    with predict_tab:
        uploads = st.file_uploader(
            "Images (PNG, JPEG, TIFF, BMP or DICOM)", accept_multiple_files=True
        )
        if not uploads:
            st.info(
                f"Upload one or several images to classify them as {', '.join(predictor.classes)}."
            )
        for upload in uploads or []:
            render_upload(predictor, lock, upload, thresholds, tta, cam, s.max_pixels)
    with card_tab:
        try:
            render_card(predictor)
        except Exception as err:  # a damaged eval file: say so, keep the page
            st.error(f"The model card could not be built: {type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
