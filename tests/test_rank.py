"""Scoring a corpus with a linear class (snoop_nb.learn.rank): numpy on small corpora, PyTorch's
float16 kernel on large ones, the same scores either way."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from snoop_nb.learn import rank


def unit_rows(n: int, dim: int = 1280, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


@pytest.mark.parametrize("n", [1, 5, 2048, 2049, 5000])
def test_numpy_and_torch_scores_agree_to_float16_precision(n):
    rows = unit_rows(n)
    w = np.random.default_rng(1).standard_normal(1280).astype(np.float32)
    exact = rows.astype(np.float32) @ w + np.float32(0.25)
    by_numpy = rank._score_numpy(rows, w, 0.25)
    by_torch = rank._score_torch(rows, w, 0.25)
    assert by_numpy.dtype == np.float32 and by_numpy.shape == (n,)
    scale = np.abs(w).sum() * 2.0**-11  # float16 rounding of the weights
    assert np.abs(by_numpy - exact).max() < scale
    assert np.abs(by_numpy - by_torch).max() < 2 * scale
    if n <= 1000:  # (larger: ties at float16 precision may swap items at the cut)
        k = min(50, n)
        assert set(np.argsort(-by_numpy)[:k]) == set(np.argsort(-exact)[:k])


def test_small_corpus_is_scored_without_importing_torch():
    code = (
        "import sys, numpy as np\n"
        "from snoop_nb.learn.rank import score_matrix, NUMPY_MAX_VALUES\n"
        "rows = np.ones((NUMPY_MAX_VALUES // 1280, 1280), np.float16)\n"
        "s = score_matrix(rows, np.full(1280, 0.5, np.float32), 1.0)\n"
        "assert abs(float(s[0]) - 641.0) < 1e-3, s[0]\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_large_corpus_goes_through_torch_with_the_same_scores():
    rows = unit_rows(rank.NUMPY_MAX_VALUES // 1280 + 1, seed=3)
    w = np.random.default_rng(4).standard_normal(1280).astype(np.float32)
    got = rank.score_matrix(rows, w, -1.0)
    assert np.abs(got - rank._score_numpy(rows, w, -1.0)).max() < 2 * np.abs(w).sum() * 2.0**-11
    assert rank.score_matrix(rows[:0], w).shape == (0,)
