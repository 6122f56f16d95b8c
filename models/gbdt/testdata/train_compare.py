#!/usr/bin/python3
"""Training time and average precision of XGBoost's hist on the rows
`streamscore train --kind gbdt` fits, for comparison.

    streamscore features --events events.jsonl --labels labels.jsonl \\
        --from 2026-02-01 --to 2026-04-01 --out rows.csv
    /usr/bin/python3 models/gbdt/testdata/train_compare.py rows.csv 2026-03-11 [ROUNDS]

Rows before the split date are the training range: its first 80% are
fitted and the last 20% held out for early stopping (as streamscore
train does), the rows from the split date on are evaluated. The settings
are streamscore's gbdt defaults: depth 6, eta 0.1, lambda 1,
min_child_weight 1, subsample 0.8, colsample_bytree 0.8, 256 bins,
positives weighted sqrt(neg/pos), early stopping after 30 rounds, 2
threads. With ROUNDS, exactly that many rounds and no early stopping (to
time the same number of trees).
"""
import sys
import time

import numpy as np
import xgboost as xgb


def average_precision(scores, y):
    order = np.argsort(-scores, kind="stable")
    y = y[order]
    tp = np.cumsum(y)
    prec = tp / np.arange(1, len(y) + 1)
    return float(np.sum(prec * y) / max(1, y.sum()))


def main():
    path, split = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    with open(path) as f:
        header = f.readline().strip().split(",")
    feat_cols = list(range(5, len(header)))
    t0 = time.perf_counter()
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[2] + feat_cols, dtype=np.float32)
    ts = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[1], dtype=str)
    print(f"read {len(data)} rows x {len(feat_cols)} features in {time.perf_counter() - t0:.1f}s")
    y, x = data[:, 0], data[:, 1:]
    in_train = ts < split
    n_range = int(in_train.sum())
    nv = int(round(n_range * 0.2))
    nt = n_range - nv
    xt, yt = x[:nt], y[:nt]
    xv, yv = x[nt:n_range], y[nt:n_range]
    xe, ye = x[n_range:], y[n_range:]
    pos = yt.sum()
    cw = float(np.sqrt((nt - pos) / pos))
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "lambda": 1.0, "min_child_weight": 1.0, "subsample": 0.8, "colsample_bytree": 0.8,
              "max_bin": 256, "scale_pos_weight": cw, "nthread": 2, "seed": 1, "eval_metric": "logloss"}
    t0 = time.perf_counter()
    dt = xgb.DMatrix(xt, label=yt)
    dv = xgb.DMatrix(xv, label=yv)
    if rounds:
        b = xgb.train(params, dt, num_boost_round=rounds)
    else:
        b = xgb.train(params, dt, num_boost_round=500, evals=[(dv, "valid")],
                      early_stopping_rounds=30, verbose_eval=False)
    el = time.perf_counter() - t0
    n_trees = b.num_boosted_rounds()
    best = getattr(b, "best_iteration", n_trees - 1) + 1 if not rounds else n_trees
    pe = b.predict(xgb.DMatrix(xe), iteration_range=(0, best))
    print(f"xgboost {xgb.__version__} hist: {nt} rows x {x.shape[1]} features, {n_trees} rounds "
          f"(best {best}) in {el:.1f}s (2 threads, DMatrix build included); "
          f"evaluation {len(ye)} rows, {int(ye.sum())} fraud: AP {average_precision(pe, ye):.4f}")


if __name__ == "__main__":
    main()
