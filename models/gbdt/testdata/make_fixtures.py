#!/usr/bin/python3
"""Re-creates the XGBoost parity fixtures of models/gbdt (seeded).

Run from the repository root with the Debian package python3-xgboost (1.7):

    /usr/bin/python3 models/gbdt/testdata/make_fixtures.py

For each case it trains a small XGBoost model on data with missing values
(NaN), saves it with save_model as JSON (<case>.model.json) and writes
<case>.expect.json: test rows (null = missing), XGBoost's predictions
(predict), margins (output_margin) and TreeSHAP contributions
(pred_contribs, one column per feature then the bias). The Go tests import
the model and compare without Python.
"""
import json
import os

import numpy as np
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))


def data(rng, rows, feats, missing):
    x = rng.normal(size=(rows, feats)).astype(np.float32)
    x[:, 1] = np.round(x[:, 1] * 3)  # a few distinct values: ties at thresholds
    mask = rng.random(size=x.shape) < missing
    x[mask] = np.nan
    return x


def write(case, booster, xt):
    booster.save_model(os.path.join(HERE, case + ".model.json"))
    d = xgb.DMatrix(xt, missing=np.nan)
    pred = booster.predict(d)
    margin = booster.predict(d, output_margin=True)
    contribs = booster.predict(d, pred_contribs=True)
    rows = [[None if np.isnan(v) else float(v) for v in r] for r in xt]
    out = {
        "xgboost_version": xgb.__version__,
        "rows": rows,
        "predictions": [float(v) for v in pred],
        "margins": [float(v) for v in margin],
        "contributions": [[float(v) for v in r] for r in contribs],
    }
    with open(os.path.join(HERE, case + ".expect.json"), "w") as f:
        json.dump(out, f)


def main():
    rng = np.random.default_rng(20261206)
    feats = 6
    # binary:logistic, non-default base_score, hist, subsampling.
    x = data(rng, 2000, feats, 0.15)
    logit = 1.5 * np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + np.isnan(x[:, 3]) * 1.0
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "base_score": 0.3,
                   "tree_method": "hist", "subsample": 0.8, "colsample_bytree": 0.8, "seed": 1,
                   "min_child_weight": 0.5, "lambda": 1.0, "nthread": 1},
                  xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=25)
    write("binary", b, data(rng, 300, feats, 0.15))
    # reg:squarederror, exact method (thresholds at midpoints), deeper.
    x = data(rng, 2000, feats, 0.1)
    y = (np.nan_to_num(x[:, 0]) ** 2 + np.sin(np.nan_to_num(x[:, 4]) * 2) + rng.normal(size=len(x)) * 0.1).astype(np.float32)
    b = xgb.train({"objective": "reg:squarederror", "max_depth": 6, "eta": 0.2, "base_score": 1.7,
                   "tree_method": "exact", "seed": 2, "nthread": 1},
                  xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=30)
    write("regression", b, data(rng, 300, feats, 0.1))


if __name__ == "__main__":
    main()
