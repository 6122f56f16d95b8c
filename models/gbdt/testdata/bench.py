#!/usr/bin/python3
"""Scoring speed of a gbdt model against XGBoost's own predictor, same run.

    /usr/bin/python3 models/gbdt/testdata/bench.py

Trains an XGBoost model of 500 trees of depth 6 over 39 features (seeded,
normal features, a nonlinear label), saves it as JSON in a temporary
directory, times XGBoost's inplace_predict with one thread at batch 1 and
256 and its pred_contribs (TreeSHAP) per row, then runs the Go benchmark
BenchmarkXGBoostModel (models/gbdt), which
imports the same file and scores rows of the same distribution with
Scorer.Score. Both print rows/s per core (one thread / GOMAXPROCS=1).
Batch 1 through Python includes the call overhead of the binding: it is
what a Python service pays per call, not only the tree walk.
"""
import os
import subprocess
import tempfile
import time

import numpy as np
import xgboost as xgb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def main():
    rng = np.random.default_rng(7)
    n, f = 50000, 39
    x = rng.normal(size=(n, f)).astype(np.float32)
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2] * 2) + 0.5 * x[:, 3] - 1
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.05, "tree_method": "hist",
                   "min_child_weight": 0.01, "lambda": 1.0, "seed": 1, "nthread": 2},
                  xgb.DMatrix(x, label=y), num_boost_round=500)
    b.set_param({"nthread": 1})
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "bench500.model.json")
    b.save_model(path)
    rows = rng.normal(size=(4096, f)).astype(np.float32)
    for batch in (1, 256):
        b.inplace_predict(rows[:batch])  # warm up
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3:
            for i in range(0, len(rows), batch):
                b.inplace_predict(rows[i:i + batch])
            done += len(rows)
        el = time.perf_counter() - t0
        print(f"xgboost {xgb.__version__} inplace_predict nthread=1 batch={batch}: {done / el:.0f} rows/s")
    # TreeSHAP: pred_contribs of one row at a time, one thread.
    d1 = [xgb.DMatrix(rows[i:i + 1]) for i in range(200)]
    t0 = time.perf_counter()
    for d in d1:
        b.predict(d, pred_contribs=True)
    el = time.perf_counter() - t0
    print(f"xgboost {xgb.__version__} pred_contribs nthread=1, one row per call: {el / len(d1) * 1e3:.2f} ms/row")
    env = dict(os.environ, STREAMSCORE_XGB_BENCH_MODEL=path, GOMAXPROCS="1")
    subprocess.run(["go", "test", "./models/gbdt", "-run", "^$", "-bench", "BenchmarkXGBoostModel",
                    "-benchtime", "3s"], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
