"""The inference web app: a Streamlit page over a run or a fold ensemble (``make app RUN=...``)."""

from pathlib import Path

PAGE = Path(__file__).with_name("page.py")
