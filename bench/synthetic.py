"""Simulated CLIP-like feature sets with known label noise, for tests and `bench/`.

    data = make_noisy_features(num_classes=200, imbalance=50, noise=0.4, seed=0)
    data.embed, data.labels, data.true_labels, data.is_noisy, data.test_embed, data.test_labels

Geometry: genus means are random unit vectors; each species mean sits near its genus mean,
so species of one genus are confusable (as related plants are in CLIP space). A sample is its
species mean plus isotropic Gaussian noise plus a shared low-rank nuisance, plus one offset
common to all samples, then L2-normalised like a CLIP embedding.

Why these defaults (checked against what ViT-B/32 features of web images look like):
- CLIP image embeddings sit in a narrow cone: two unrelated images have cosine ~0.4-0.5. The
  shared offset gives unrelated samples a mean cosine of `cone` = 0.45 (0 before this was
  modelled, which made cosine prototypes look better than they are on real features).
- After removing the cone (centring), same-class pairs of fine-grained web images have cosine
  ~0.3-0.5 and related species a bit less. Defaults give 0.34 (same class), 0.28 (same genus),
  0.0 (unrelated); the first cut gave 0.17 / 0.11, i.e. images twice as noisy as CLIP's, so a
  probe lost 30+ points to 30% label noise where real CLIP probes lose far fewer.
- Hardness: a probe trained on the clean labels reaches ~78% top-1 on 200 classes at 100
  images per largest folder and falls with more classes and fewer images (the oracle row of
  `bench/NOISY.md`), in the range of CLIP ViT-B/32 linear probes on fine-grained sets
  (birds, cars, plants: ~60-85%); it stays well below 100% because siblings overlap.
- Out-of-set samples come from extra species that share the genera of the label set
  (web folders hold look-alikes of other species more often than random junk), so they are
  not trivially far from everything.

`realism=Realism()` is the realistic variant: classes with their own directions of variance,
2-4 sub-clusters, heavy-tailed scatter and unequal difficulty (`Realism` says why each), so
that a method built on one shared-covariance Gaussian per class is not judged only on the
data it assumes.

Noise follows how web folders are scraped: the folder sizes (given labels) follow the long
tail, and inside every folder a share `noise` of the images is something else: a random other
class (uniform flip), a sibling species of the same genus (similar flip), or a class outside
the label set (out-of-set, true label -1). Test set: clean and class-balanced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLIP_PRIORS = ("uniform", "size")


@dataclass
class NoisySet:
    """A generated training set with known noise and a clean balanced test set.

    Attributes:
        embed: (N, D) float32 L2-normalised training embeddings.
        labels: (N,) int64 given (noisy) labels.
        true_labels: (N,) int64 true class, -1 for out-of-set samples.
        is_noisy: (N,) bool, `labels != true_labels`.
        noise_kind: (N,) int8, 0 clean, 1 uniform flip, 2 similar flip, 3 out-of-set.
        test_embed: (M, D) float32 clean test embeddings.
        test_labels: (M,) int64.
        text_embed: (K, D) float32 noisy class-name embeddings (zero-shot head), or None.
        genus: (K,) int64 genus of every class.
    """

    embed: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    is_noisy: np.ndarray
    noise_kind: np.ndarray
    test_embed: np.ndarray
    test_labels: np.ndarray
    text_embed: np.ndarray | None
    genus: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.genus)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def long_tail_counts(num_classes: int, max_per_class: int, imbalance: float) -> np.ndarray:
    """Exponential profile from `max_per_class` down to `max_per_class / imbalance` (>= 2).

    The class order is shuffled by the caller, so head and tail classes are spread over genera.
    """
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1, got {imbalance}")
    ranks = np.arange(num_classes) / max(num_classes - 1, 1)
    counts = np.round(max_per_class * imbalance ** (-ranks)).astype(np.int64)
    return np.maximum(counts, 2)  # a folder of one image cannot hold a noisy sibling


def _class_means(rng, num_classes: int, num_genera: int, dim: int, spread: float):
    genus_means = _unit(rng.standard_normal((num_genera, dim)))
    genus = rng.integers(0, num_genera, num_classes)
    genus[:num_genera] = np.arange(min(num_genera, num_classes))  # every genus used
    offsets = _unit(rng.standard_normal((num_classes, dim)))
    return _unit(genus_means[genus] + spread * offsets), genus


def _draw(rng, means, classes, sigma: float, nuisance: np.ndarray, cone: np.ndarray,
          shape: ClassShapes | None = None) -> np.ndarray:  # fmt: skip
    """Samples: species mean + isotropic noise + a shared low-rank nuisance (pose, background).

    The nuisance directions carry no class information but large variance, as CLIP's dominant
    directions do; a trained linear probe learns to ignore them, a class-mean classifier cannot.
    With `shape` (the realistic variant) each class also gets its own sub-cluster, scatter
    scale, heavy-tailed radius and own directions of variance (`ClassShapes.add`).
    """
    dim = means.shape[1]
    noise = rng.standard_normal((len(classes), dim)) * (sigma / np.sqrt(dim))
    style = rng.standard_normal((len(classes), nuisance.shape[0])) @ nuisance  # (n, D)
    if shape is None:
        return _unit(means[classes] + noise + style + cone).astype(np.float32)
    return _unit(shape.add(means, classes, noise) + style + cone).astype(np.float32)


@dataclass
class Realism:
    """Knobs that break the one-shared-covariance Gaussian a generative relabeler assumes;
    `Realism()` is the realistic variant of the bench, `None` the plain one."""

    # Per-class anisotropic covariance: every class varies most along its own `rank`
    # directions (a bird's pose, a car's viewpoint), not along one shared set; a shared
    # covariance then over- or under-states every class's spread. Norm of that variation.
    anisotropy: float = 0.8
    rank: int = 4
    # Multi-modal classes: 2..max_modes sub-clusters (male / female, flower / leaf, larva /
    # adult) at this distance from the species mean; a single Gaussian mean sits between them.
    max_modes: int = 4
    mode_spread: float = 0.6
    # Heavy-tailed scatter: the per-sample noise radius is Student-t with `tail_df` degrees of
    # freedom (odd crops, occlusion, clutter), so Gaussian likelihoods are overconfident far out.
    tail_df: float = 3.0
    # Class-dependent difficulty: each class's noise scale is exp(N(0, difficulty)), as some
    # species are photographed in clean studio shots and others in the wild.
    difficulty: float = 0.35


class ClassShapes:
    """The realistic variant's per-class draws (from their own generator, so the plain
    variant's draws, and seeded plain sets, stay what they were)."""

    def __init__(self, realism: Realism, num_species: int, dim: int, seed: int):
        self.r, self.rng = realism, np.random.default_rng([seed, 18])
        rng = self.rng
        self.modes = rng.integers(2, realism.max_modes + 1, num_species)  # (S,) sub-clusters
        self.mode_offsets = _unit(rng.standard_normal((num_species, realism.max_modes, dim)))
        self.scale = np.exp(rng.normal(0, realism.difficulty, num_species))  # (S,)
        basis = _unit(rng.standard_normal((num_species, realism.rank, dim)))  # (S, r, D)
        self.basis = basis * (realism.anisotropy / np.sqrt(realism.rank))

    def add(self, means: np.ndarray, classes: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """(n, D) mean of each sample's sub-cluster + its class-shaped, heavy-tailed scatter."""
        rng, n = self.rng, len(classes)
        mode = (rng.random(n) * self.modes[classes]).astype(np.int64)
        centre = means[classes] + self.r.mode_spread * self.mode_offsets[classes, mode]
        radius = np.sqrt(self.r.tail_df / rng.chisquare(self.r.tail_df, n))  # Student-t radius
        z = rng.standard_normal((n, self.r.rank))
        own = sum(z[:, j, None] * self.basis[classes, j] for j in range(self.r.rank))  # (n, D)
        scatter = (noise + own) * (self.scale[classes] * radius)[:, None]
        return centre + scatter


def _noisy_true_classes(rng, given, kinds, genus, popularity=None) -> np.ndarray:
    """True class of each noisy sample given its folder label and noise kind (1 or 2).

    `popularity` (K,) weights the draw of the true class (None = uniform over classes).
    """
    num_classes = len(genus)
    true = given.copy()
    for i in np.flatnonzero(kinds > 0):
        others = np.arange(num_classes) != given[i]
        siblings = others & (genus == genus[given[i]])
        to_sibling = kinds[i] == 2 and siblings.any()
        pool = siblings if to_sibling else others
        if popularity is None:
            true[i] = _uniform_pick(rng, pool, given[i], to_sibling)
        else:
            w = popularity * pool
            true[i] = rng.choice(num_classes, p=w / w.sum())
    return true


def _uniform_pick(rng, pool: np.ndarray, given: int, sibling: bool) -> int:
    # The draw order of the first version, kept so that seeded sets stay identical.
    if sibling:
        return int(rng.choice(np.flatnonzero(pool)))
    other = rng.integers(0, len(pool) - 1)
    return int(other + (other >= given))


def _check_options(flip_prior: str, noise: float, noise_mix) -> np.ndarray:
    """The noise mix as an array, once the options are known to be valid."""
    if flip_prior not in FLIP_PRIORS:
        raise ValueError(f"flip_prior must be one of {FLIP_PRIORS}, got {flip_prior!r}")
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    mix = np.asarray(noise_mix, dtype=np.float64)
    if mix.shape != (3,) or mix.min() < 0 or mix.sum() <= 0:
        raise ValueError(f"noise_mix must be 3 non-negative shares, got {noise_mix}")
    return mix


def _space(rng, num_species: int, num_genera: int, dim: int, *, spread: float, sigma: float,
           nuisance: float, cone: float):  # fmt: skip
    """Species means (S, D) and genus (S,), the shared nuisance basis (rank, D) and the
    cone offset (D,), drawn in the first version's order so seeded sets stay identical."""
    means, genus = _class_means(rng, num_species, num_genera, dim, spread)
    rank = max(1, dim // 16)
    style = _unit(rng.standard_normal((rank, dim))) * (nuisance / np.sqrt(rank))  # (rank, D)
    # A shared offset makes unrelated samples' mean cosine `cone` (CLIP's narrow cone).
    offset = np.sqrt(cone / (1 - cone) * (1 + sigma**2 + nuisance**2)) * _unit(
        rng.standard_normal(dim)
    )
    return means, genus, style, offset


def _folders(rng, counts: np.ndarray, noise: float, mix: np.ndarray):
    """Given labels (N,) of folders of `counts` images and each image's kind (N,): 0 clean,
    1 uniform flip, 2 similar flip, 3 out-of-set; draws in the first version's order."""
    given = np.repeat(np.arange(len(counts)), counts)
    kinds = np.zeros(len(given), dtype=np.int8)
    noisy_idx = rng.choice(len(given), size=int(round(noise * len(given))), replace=False)
    kinds[noisy_idx] = rng.choice([1, 2, 3], size=len(noisy_idx), p=mix / mix.sum())
    return given, kinds


def make_noisy_features(
    *,
    num_classes: int = 200,
    dim: int = 128,
    imbalance: float = 10.0,
    max_per_class: int = 100,
    noise: float = 0.4,
    noise_mix: tuple[float, float, float] = (0.4, 0.4, 0.2),
    species_per_genus: int = 5,
    spread: float = 0.4,
    sigma: float = 1.2,
    nuisance: float = 0.8,
    cone: float = 0.45,
    test_per_class: int = 20,
    text_noise: float = 0.8,
    flip_prior: str = "uniform",
    realism: Realism | None = None,
    seed: int = 0,
) -> NoisySet:
    """Generate a noisy long-tailed training set and a clean balanced test set.

    Args:
        num_classes: K, classes in the label set.
        dim: D, embedding width (512 like CLIP; smaller is faster and as informative here).
        imbalance: largest / smallest folder size (1 = balanced).
        max_per_class: size of the largest folder.
        noise: share of every folder whose image belongs elsewhere (0 to < 1).
        noise_mix: shares of uniform flips, similar (same-genus) flips and out-of-set samples.
        species_per_genus: mean number of classes per genus (how crowded neighbourhoods are).
        spread: distance of a species mean from its genus mean (smaller = more confusable).
        sigma: per-sample noise norm around the species mean (larger = harder).
        nuisance: norm of the shared class-free variation (rank D / 16).
        test_per_class: clean test images per class.
        text_noise: noise norm of the simulated class-name text embeddings.
        flip_prior: how a flipped image's true class is drawn: "uniform" over the (sibling)
            classes, the tail's worst case (a rare species is misfiled as often as a common
            one); or "size", in proportion to folder sizes (as often as it is photographed).
        realism: None (plain: one isotropic Gaussian per class, exactly the model a shared-
            covariance relabeler assumes) or the knobs of the realistic variant (`Realism()`).
        seed: everything is a function of it.
    """
    mix = _check_options(flip_prior, noise, noise_mix)
    rng = np.random.default_rng(seed)
    num_outside = max(10, num_classes // 5)  # classes that exist but are not in the label set
    means, genus, style, offset = _space(
        rng, num_classes + num_outside, max(1, num_classes // species_per_genus), dim,
        spread=spread, sigma=sigma, nuisance=nuisance, cone=cone,
    )  # fmt: skip
    in_means, genus = means[:num_classes], genus[:num_classes]
    shapes = None if realism is None else ClassShapes(realism, len(means), dim, seed)

    counts = rng.permutation(long_tail_counts(num_classes, max_per_class, imbalance))
    given, kinds = _folders(rng, counts, noise, mix)
    popularity = counts.astype(np.float64) if flip_prior == "size" else None
    true = _noisy_true_classes(rng, given, kinds, genus, popularity)
    outside = num_classes + rng.integers(0, num_outside, len(given))
    source = np.where(kinds == 3, outside, true)
    embed = _draw(rng, means, source, sigma, style, offset, shapes)
    true[kinds == 3] = -1

    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    test_embed = _draw(rng, means, test_labels, sigma, style, offset, shapes)
    text = _unit(in_means + rng.standard_normal(in_means.shape) * text_noise / np.sqrt(dim))
    return _noisy_set(embed, given, true, kinds, test_embed, test_labels, text, genus)


def _noisy_set(embed, given, true, kinds, test_embed, test_labels, text, genus) -> NoisySet:
    """The arrays in NoisySet's dtypes; `is_noisy` where the given label is not the truth."""
    return NoisySet(
        embed=embed,
        labels=given.astype(np.int64),
        true_labels=true.astype(np.int64),
        is_noisy=given != true,
        noise_kind=kinds,
        test_embed=test_embed,
        test_labels=test_labels.astype(np.int64),
        text_embed=text.astype(np.float32),
        genus=genus.astype(np.int64),
    )
