"""Classical baselines: a scikit-learn estimator on pixels or on frozen timm backbone features."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import resample
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

FEATURES = ("pixels", "backbone")


def _platt(svc: BaseEstimator) -> BaseEstimator:
    # what SVC(probability=True) did (cross-validated Platt scaling), in the form scikit-learn
    # recommends since 1.9 deprecated that flag
    return CalibratedClassifierCV(svc, method="sigmoid", ensemble=False)


@dataclass(frozen=True)
class EstimatorSpec:
    """A scikit-learn classifier, whether it needs standardized inputs, its defaults, a wrapper."""

    cls: type[BaseEstimator]
    scaled: bool
    defaults: dict[str, Any] = field(default_factory=dict)
    wrap: Callable[[BaseEstimator], BaseEstimator] | None = None


# trees split on thresholds, so only the linear and kernel models get a StandardScaler
ESTIMATORS: dict[str, EstimatorSpec] = {
    "logreg": EstimatorSpec(LogisticRegression, scaled=True, defaults={"max_iter": 2000}),
    "svc": EstimatorSpec(SVC, scaled=True, wrap=_platt),
    "random_forest": EstimatorSpec(RandomForestClassifier, scaled=False),
    "hist_gb": EstimatorSpec(HistGradientBoostingClassifier, scaled=False),
}


class ClassicalClassifier:
    """A scikit-learn baseline that the pipeline runs through ``fit_evaluate`` instead of Lightning.

    ``features``: ``pixels`` (the normalized images, flattened) or ``backbone`` (the pooled output
    of a frozen timm model). Training images go through the validation transform: no augmentation.
    ``params`` go to the estimator; ``seed`` becomes its ``random_state``. ``n_threads`` caps the
    threads (OpenMP, BLAS, torch) of feature extraction, fitting and prediction, for runs that share
    a machine; None: no cap.
    """

    def __init__(
        self,
        estimator: str = "logreg",
        features: str = "pixels",
        backbone: str | None = "efficientnet_lite0",
        pretrained: bool = True,
        weights: str | None = "packaged",
        params: Mapping[str, Any] | None = None,
        seed: int = 42,
        max_train_samples: int | None = None,
        backbone_kwargs: Mapping[str, Any] | None = None,
        n_threads: int | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
    ):
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"model.estimator={estimator!r} is not valid; choose one of {list(ESTIMATORS)}"
            )
        if features not in FEATURES:
            raise ValueError(
                f"model.features={features!r} is not valid; choose one of {list(FEATURES)}"
            )
        if features == "backbone" and not backbone:
            raise ValueError("model.features=backbone needs model.backbone (a timm model name)")
        if max_train_samples is not None and max_train_samples < 1:
            raise ValueError(
                f"model.max_train_samples={max_train_samples} must be a positive count or null"
            )
        self.estimator = estimator
        self.features = features
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.params = dict(params or {})
        self.seed = int(seed)
        self.max_train_samples = max_train_samples
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.n_threads = n_threads
        self.num_classes = num_classes
        self.in_chans = in_chans
        self._weights_file: str | None = None
        self._check_params()
        if features == "backbone":
            self._check_backbone()
        self.fitted_: BaseEstimator | None = None
        self.train_indices_: np.ndarray | None = None

    def _check_params(self) -> None:
        spec = ESTIMATORS[self.estimator]
        valid = spec.cls().get_params()
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise ValueError(
                f"model.params {unknown} are not arguments of {spec.cls.__name__} "
                f"(model.estimator={self.estimator}); valid: {sorted(valid)}"
            )
        if self.estimator == "svc" and "probability" in self.params:
            raise ValueError(
                "model.params.probability: svc probabilities always come from Platt "
                "scaling (CalibratedClassifierCV); leave the flag out"
            )

    def _check_backbone(self) -> None:
        from medsweep.models.factory import check_timm_name
        from medsweep.models.weights import resolve_weights

        try:
            check_timm_name(self.backbone)
        except ValueError as exc:  # the factory names its own key; here the name is model.backbone
            raise ValueError(str(exc).replace("model.name=", "model.backbone=", 1)) from None
        # a missing file or an unpackaged name fails here, before any data is read
        self._weights_file = (
            resolve_weights(self.backbone, self.weights) if self.pretrained else None
        )

    def make_estimator(self, task: str) -> BaseEstimator:
        """The unfitted estimator (scaler + classifier; one classifier per label for multilabel)."""
        spec = ESTIMATORS[self.estimator]
        kwargs = {**spec.defaults, "random_state": self.seed, **self.params}
        model: BaseEstimator = spec.cls(**kwargs)
        if spec.wrap is not None:
            model = spec.wrap(model)
        if task == "multilabel":
            model = MultiOutputClassifier(model)
        return Pipeline([("scale", StandardScaler()), ("model", model)]) if spec.scaled else model

    def feature_net(self, in_chans: int) -> torch.nn.Module | None:
        """The frozen timm feature extractor (on the GPU when there is one); None for pixels."""
        if self.features != "backbone":
            return None
        import timm

        kwargs = dict(self.backbone_kwargs)
        if self._weights_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": self._weights_file}
        net = timm.create_model(
            self.backbone, pretrained=self.pretrained, num_classes=0, in_chans=in_chans, **kwargs
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return net.eval().requires_grad_(False).to(device)

    def warn_normalization(self, normalization: str) -> None:
        """Warn when ImageNet features are fed images that are not ImageNet-normalized."""
        if (
            self.features == "backbone"
            and self.pretrained
            and normalization not in ("imagenet", "model", "auto")
        ):
            log.warning(
                "model.backbone=%s has pretrained weights but data.normalization=%s; ImageNet "
                "features usually need data.normalization=imagenet (and data.channels=3)",
                self.backbone,
                normalization,
            )

    def check_data(self, output_units: int, channels: int) -> None:
        """Fail when the data's outputs or channels differ from what the model was built for."""
        if self.num_classes is not None and self.num_classes != output_units:
            raise ValueError(
                f"model num_classes={self.num_classes}, but the data needs {output_units} outputs"
            )
        if self.in_chans is not None and self.in_chans != channels:
            raise ValueError(f"model in_chans={self.in_chans}, but data.channels={channels}")

    def select_train(self, indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The training samples to fit on: all, or a stratified subset of ``max_train_samples``."""
        n = self.max_train_samples
        if n is None or n >= len(indices):
            self.train_indices_ = np.asarray(indices)
            return self.train_indices_
        # a stratified subset keeps rare classes (or label combinations) represented
        picked = resample(
            indices, replace=False, n_samples=n, stratify=labels, random_state=self.seed
        )
        self.train_indices_ = np.sort(picked)
        return self.train_indices_

    def fit(self, x: np.ndarray, y: np.ndarray, task: str) -> ClassicalClassifier:
        """Fit the estimator on features ``x`` and targets ``y`` (indices, or multi-hot)."""
        with thread_limit(self.n_threads):
            self.fitted_ = self.make_estimator(task).fit(x, y)
        return self

    def predict_proba(self, x: np.ndarray, task: str, num_classes: int) -> np.ndarray:
        """Probabilities as the deep models give them: (N,) positive class, or (N, K)."""
        if self.fitted_ is None:
            raise ValueError("the classical model is not fitted yet: call fit() first")
        with thread_limit(self.n_threads):
            return self._probabilities(self.fitted_, x, task, num_classes)

    def _probabilities(
        self, model: BaseEstimator, x: np.ndarray, task: str, num_classes: int
    ) -> np.ndarray:
        if task == "multilabel":
            per_label = model.predict_proba(x)
            classifiers = _final(model).estimators_
            probs = np.stack(
                [
                    _columns(p, c.classes_, [1])[:, 0]
                    for p, c in zip(per_label, classifiers, strict=True)
                ],
                axis=1,
            )
        else:
            wanted = [1] if task == "binary" else list(range(num_classes))
            probs = _columns(model.predict_proba(x), _final(model).classes_, wanted)
            if task == "binary":
                probs = probs[:, 0]
            else:  # float32 features give rows that sum to 1 only to ~1e-7
                probs /= np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return np.clip(probs, 0.0, 1.0)

    def describe(self, n_train: int, n_features: int) -> dict[str, Any]:
        """The estimator, its features and the fitted data's shape, for metrics.json."""
        return {
            "estimator": self.estimator,
            "features": self.features,
            "backbone": self.backbone if self.features == "backbone" else None,
            "n_train": int(n_train),
            "n_features": int(n_features),
        }


def extract_features(
    dataset: Dataset, batch_size: int, num_workers: int = 0, net: torch.nn.Module | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) of ``dataset`` (flattened images, or ``net``'s outputs) and its targets."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(net.parameters()).device if net is not None else torch.device("cpu")
    feats, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            out = net(x.to(device)) if net is not None else x
            feats.append(out.flatten(1).float().cpu().numpy())
            targets.append(y.numpy())
    return np.concatenate(feats), np.concatenate(targets).astype(np.int64)


@contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Cap OpenMP/BLAS threads (scikit-learn, numpy) and torch's intra-op threads; None: no cap."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def _final(model: BaseEstimator) -> BaseEstimator:
    return model[-1] if isinstance(model, Pipeline) else model


def _columns(proba: np.ndarray, seen: np.ndarray, wanted: list[int]) -> np.ndarray:
    """Columns of ``proba`` for the ``wanted`` classes; zero for a class absent from training."""
    out = np.zeros((len(proba), len(wanted)), dtype=np.float64)
    position = {int(c): i for i, c in enumerate(seen)}
    for j, c in enumerate(wanted):
        if c in position:
            out[:, j] = proba[:, position[c]]
    return out
