#!/usr/bin/env python3
"""Re-creates the ONNX parity fixtures of the streamscore onnx package.

Each fixture is a small, seeded, randomly initialised PyTorch model exported
with torch.onnx.export (opset 13), plus a JSON file beside it holding the
feature names, seeded random inputs and the outputs PyTorch itself computed
on them. The Go parity test imports the .onnx, scores the inputs with the
native runtime and compares with PyTorch's outputs.

Run from this directory with the Debian packages python3-torch (1.13.1) and
python3-onnx (1.12.0):

    /usr/bin/python3 make_fixtures.py

The outputs are deterministic for a given torch build (fixed seeds, CPU).

JSON layout:
  stateless families (logistic, linear, mlp):
    {"family", "inputs": [names], "rows": [[x...]...], "want": [p...]}
  sequence families (cnn, gru, lstm):
    {"family", "inputs": [names], "window" (cnn only),
     "sequences": [{"x": [[x...] per step], "want": [p per step]}]}
  For the CNN, want[t] is the model's output on the window of the last
  `window` rows up to step t, left-padded with zero rows (the native
  runtime's state for a new entity); for GRU/LSTM it is the head on the
  step-t hidden output of the whole sequence run from a zero state.
  "column" (optional) is the output column holding the probability (the
  class-1 column of a softmax head).
"""

import json
import os

import onnx
import torch
from torch import nn

OPSET = 13
HERE = os.path.dirname(os.path.abspath(__file__))


def names(n):
    return ["f%d" % i for i in range(n)]


def floats(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def rows(t):
    return [floats(r) for r in t]


def export(model, example, name, input_names, dynamic):
    path = os.path.join(HERE, name + ".onnx")
    torch.onnx.export(
        model,
        example,
        path,
        opset_version=OPSET,
        input_names=input_names,
        output_names=["score"],
        dynamic_axes=dynamic,
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(path))
    return path


def write(name, doc):
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


class Standardised(nn.Module):
    """Logistic regression whose graph starts with (x - mean) / std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.lin = nn.Linear(len(mean), 1)

    def forward(self, x):
        return torch.sigmoid(self.lin((x - self.mean) / self.std))


class Seq(nn.Module):
    """A recurrent cell whose head is applied to every step's output."""

    def __init__(self, cell, head):
        super().__init__()
        self.cell = cell
        self.head = head

    def forward(self, x):
        y, _ = self.cell(x)
        return self.head(y)


def stateless(name, family, model, n, x):
    model.eval()
    with torch.no_grad():
        want = model(x)
    export(model, x[:2], name, ["x"], {"x": {0: "batch"}, "score": {0: "batch"}})
    write(name, {"family": family, "inputs": names(n), "rows": rows(x), "want": floats(want)})


def cnn(name, model, n, window, seqs, column=None):
    model.eval()
    example = torch.zeros(2, n, window)
    export(model, example, name, ["x"], {"x": {0: "batch"}, "score": {0: "batch"}})
    out = []
    with torch.no_grad():
        for s in seqs:  # s: (T, n)
            want = []
            for t in range(s.shape[0]):
                w = torch.zeros(window, n)
                lo = max(0, t - window + 1)
                part = s[lo : t + 1]
                w[window - part.shape[0] :] = part
                y = model(w.t().unsqueeze(0))[0]
                want.append(float(y[column if column is not None else 0]))
            out.append({"x": rows(s), "want": want})
    doc = {"family": "cnn", "inputs": names(n), "window": window, "sequences": out}
    if column is not None:
        doc["column"] = column
    write(name, doc)


def recurrent(name, family, model, n, seqs, batch_first):
    model.eval()
    example = torch.zeros(2, 3, n) if batch_first else torch.zeros(3, 2, n)
    export(model, example, name, ["x"],
           {"x": {0: "batch", 1: "steps"} if batch_first else {0: "steps", 1: "batch"},
            "score": {0: "batch", 1: "steps"} if batch_first else {0: "steps", 1: "batch"}})
    out = []
    with torch.no_grad():
        for s in seqs:
            x = s.unsqueeze(0) if batch_first else s.unsqueeze(1)
            y = model(x)
            y = y[0] if batch_first else y[:, 0]
            out.append({"x": rows(s), "want": floats(y[:, 0])})
    write(name, {"family": family, "inputs": names(n), "sequences": out})


def main():
    torch.manual_seed(20261128)

    # logistic, with a leading standardisation folded into the inputs.
    n = 6
    mean = torch.tensor([120.0, 3.0, 0.5, 1500.0, -2.0, 40.0])
    std = torch.tensor([80.0, 1.5, 0.25, 900.0, 3.0, 12.0])
    m = Standardised(mean, std)
    with torch.no_grad():
        m.lin.weight.mul_(3.0)
    stateless("logistic_std", "logistic", m, n, mean + std * torch.randn(16, n))

    # linear: an expected value, identity output.
    n = 5
    m = nn.Linear(n, 1)
    stateless("linear", "linear", m, n, 2 * torch.randn(16, n))

    # mlp: Linear-ReLU-Linear-Tanh-Linear-Sigmoid.
    n = 7
    m = nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
    stateless("mlp", "mlp", m, n, 1.5 * torch.randn(16, n))

    # cnn: Conv1d over (batch, features, window) -> ReLU -> MaxPool1d -> Flatten -> Linear -> Sigmoid.
    n, window = 5, 8
    m = nn.Sequential(nn.Conv1d(n, 4, 3), nn.ReLU(), nn.MaxPool1d(2, 2), nn.Flatten(), nn.Linear(4 * 3, 1), nn.Sigmoid())
    cnn("cnn", m, n, window, [torch.randn(12, n) for _ in range(3)])

    # cnn with average pooling and a 2-class softmax head (class 1 = fraud).
    n, window = 6, 7
    m = nn.Sequential(nn.Conv1d(n, 3, 2), nn.Tanh(), nn.AvgPool1d(3, 1), nn.Flatten(), nn.Linear(3 * 4, 2), nn.Softmax(dim=1))
    cnn("cnn_softmax", m, n, window, [torch.randn(10, n) for _ in range(3)], column=1)

    # gru: batch-first, hidden 8, Linear+Sigmoid on every step.
    n = 6
    m = Seq(nn.GRU(n, 8, batch_first=True), nn.Sequential(nn.Linear(8, 1), nn.Sigmoid()))
    recurrent("gru", "gru", m, n, [torch.randn(9, n) for _ in range(3)], batch_first=True)

    # lstm: time-major (batch_first=False), hidden 8, a two-layer head.
    n = 5
    m = Seq(nn.LSTM(n, 8), nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid()))
    recurrent("lstm", "lstm", m, n, [torch.randn(9, n) for _ in range(3)], batch_first=False)


if __name__ == "__main__":
    main()
