"""Class balancing from the training fold: loss weights, weighted sampling, duplication."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from medsweep.seeding import derived_seed, derived_seeds

CLASS_WEIGHTS = ("inverse", "effective")


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Samples per class (or positives per label for multi-hot labels)."""
    if labels.ndim == 2:
        return labels.sum(0).astype(np.float64)
    return np.bincount(labels, minlength=n_classes).astype(np.float64)


def class_weights(
    labels: np.ndarray, n_classes: int, kind: str = "inverse", beta: float = 0.999
) -> np.ndarray:
    """Per-class loss weights that sum to ``n_classes``.

    ``inverse``: N / (K * n_c). ``effective``: (1 - beta) / (1 - beta ** n_c), the effective
    number of samples (Cui et al. 2019), rescaled to sum to K.
    """
    counts = class_counts(labels, n_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"balance.class_weights: classes {missing} have no training samples")
    if kind == "inverse":
        weights = counts.sum() / (n_classes * counts)
    elif kind == "effective":
        weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    else:
        raise ValueError(
            f"balance.class_weights={kind!r} is not valid; choose one of {list(CLASS_WEIGHTS)}"
        )
    return weights * n_classes / weights.sum()


def pos_weight(labels: np.ndarray) -> np.ndarray:
    """negatives / positives per output (binary: one value; multilabel: one per label)."""
    hot = labels.reshape(len(labels), -1).astype(np.float64)
    positives = hot.sum(0)
    if (positives == 0).any():
        raise ValueError("balance.pos_weight: a label has no positive training sample")
    return (len(hot) - positives) / positives


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weight 1 / n_class (multi-hot: of the sample's rarest positive label)."""
    if labels.ndim == 2:
        inverse = 1.0 / np.maximum(labels.sum(0), 1)
        weights = (labels * inverse).max(1)
        return np.where(weights > 0, weights, inverse.min())
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


def duplicate_minority(indices: np.ndarray, labels: np.ndarray, seed: int = 42) -> np.ndarray:
    """Replicate samples of every class up to the majority count (training fold only).

    A class of ``n`` samples short of ``target`` gets ``(target - n) // n`` whole copies of its
    samples plus a random draw without replacement for the rest, so copies are spread evenly.
    """
    if labels.ndim == 2:
        raise ValueError(
            "balance.duplicate (balance=oversample_duplicate) needs single-label data; "
            "use balance=oversample for multilabel tasks"
        )
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    target = counts.max()
    extra = []
    for c, n in enumerate(counts):
        if 0 < n < target:
            members = indices[labels == c]
            whole, rest = divmod(target - n, n)
            extra.append(np.tile(members, whole))
            extra.append(rng.choice(members, size=rest, replace=False))
    return np.concatenate([indices, *extra]) if extra else indices


class Balance:
    """One ``balance`` option: which of loss weighting, sampling or duplication to apply."""

    def __init__(
        self,
        class_weights: str | None = None,
        beta: float = 0.999,
        pos_weight: bool = False,
        oversample: bool = False,
        duplicate: bool = False,
        seed: int = 42,
    ):
        if class_weights is not None and class_weights not in CLASS_WEIGHTS:
            raise ValueError(
                f"balance.class_weights={class_weights!r}; choose one of {list(CLASS_WEIGHTS)}"
            )
        if not 0.0 < beta < 1.0:
            raise ValueError(f"balance.beta={beta} must lie in (0, 1), e.g. 0.999")
        self.class_weights = class_weights
        self.beta = beta
        self.pos_weight = pos_weight
        self.oversample = oversample
        self.duplicate = duplicate
        self.seed = seed

    def loss_kwargs(self, labels: np.ndarray, task: str, n_classes: int) -> dict:
        """Keyword arguments for the loss, computed from the training labels."""
        kwargs: dict = {}
        if self.class_weights:
            kwargs["weight"] = torch.tensor(
                class_weights(labels, n_classes, self.class_weights, self.beta), dtype=torch.float32
            )
        if self.pos_weight:
            if task == "multiclass":
                raise ValueError(
                    "balance.pos_weight (balance=pos_weight) applies to binary and "
                    "multilabel tasks with loss=bce; this task is multiclass: use "
                    "balance=class_weights"
                )
            kwargs["pos_weight"] = torch.tensor(pos_weight(labels), dtype=torch.float32)
        return kwargs

    def sampler(self, labels: np.ndarray) -> Sampler | None:
        """A WeightedRandomSampler that draws classes evenly, when ``oversample`` is set.

        Its generator is seeded here; the training loader's EpochSampler reseeds it every epoch.
        """
        if not self.oversample:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(
            torch.as_tensor(sample_weights(labels), dtype=torch.double),
            num_samples=len(labels),
            replacement=True,
            generator=generator,
        )

    def train_indices(self, indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Training indices, with minority samples replicated when ``duplicate`` is set."""
        return duplicate_minority(indices, labels, self.seed) if self.duplicate else indices


class EpochSampler(Sampler[tuple[int, int]]):
    """Draws ``sampler``'s order for epoch ``e`` from a generator seeded by (seed, e) and pairs
    each drawn index with its own augmentation seed: yields ``(index, sample_seed)``.

    An epoch's order and augmentation then depend only on (seed, epoch): not on the epochs
    before it, on a resume, or on the number of loader workers. ``sampler`` must draw from its
    ``generator`` attribute (RandomSampler, WeightedRandomSampler do). Each pass draws epoch
    ``epoch`` and moves on to the next; ``set_epoch`` (Lightning calls it before every
    training epoch) sets it.
    """

    def __init__(self, sampler: Sampler[int], seed: int, epoch: int = 0):
        if not isinstance(getattr(sampler, "generator", None), torch.Generator):
            raise TypeError(
                f"{type(sampler).__name__} has no torch.Generator in `generator`; a training "
                "sampler must draw from its own generator so each epoch can be seeded"
            )
        self.sampler = sampler
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.sampler.generator.manual_seed(derived_seed(self.seed, epoch, "order"))
        sample_seeds = derived_seeds(self.seed, epoch, "samples", len(self.sampler)).tolist()
        for index, sample_seed in zip(self.sampler, sample_seeds, strict=True):
            yield int(index), sample_seed
