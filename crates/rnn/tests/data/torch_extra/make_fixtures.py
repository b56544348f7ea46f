#!/usr/bin/env python3
"""More PyTorch parity cases, beside the team's fixtures in `../torch/`, in the same format
(its README): one safetensors file per case plus `index.json`.

They cover what those leave out: GRU and vanilla RNN stacked and bidirectional, relu, no
biases, batch-first input, unbatched input (`[seq, input]`), float32 at sizes that cross the
fused kernels' block edges, LSTMs with a projection (`proj_size`), the GRU and RNN cells (also on unbatched steps), and padded batches of variable length (PyTorch's packed sequences:
`pack_padded_sequence(..., enforce_sorted=False)`, then `pad_packed_sequence(...,
total_length=T)`), whose lengths are in the index under `lengths`.

Not run by the tests or CI (the project never depends on PyTorch); run by hand, with
`pip install torch`, to regenerate:

    python3 make_fixtures.py        # writes *.safetensors and index.json here
    python3 make_fixtures.py NAME…  # only those cases (their index entries replaced)
"""
import json
import os
import struct

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = {"rnn_cell": torch.nn.RNNCell, "lstm_cell": torch.nn.LSTMCell, "gru_cell": torch.nn.GRUCell}
DTYPES = {torch.float64: "F64", torch.float32: "F32"}

# name: mode, sizes and options (anything not given takes nn.RNN's default)
CASES = [
    ("gru_2l_bi", dict(mode="gru", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, seq_len=6, batch=2)),
    ("gru_1l_batch_first", dict(mode="gru", input_size=4, hidden_size=3, batch_first=True, seq_len=5, batch=3)),
    ("rnn_relu_2l_bi", dict(mode="rnn", nonlinearity="relu", input_size=4, hidden_size=5, num_layers=2, bidirectional=True, seq_len=6, batch=3)),
    ("rnn_tanh_2l_no_bias", dict(mode="rnn", nonlinearity="tanh", input_size=3, hidden_size=4, num_layers=2, bias=False, seq_len=5, batch=2)),
    ("lstm_1l_no_bias_batch_first", dict(mode="lstm", input_size=4, hidden_size=3, bias=False, batch_first=True, seq_len=5, batch=2)),
    ("gru_no_bias", dict(mode="gru", input_size=3, hidden_size=4, bias=False, seq_len=4, batch=2)),
    # float32 at sizes past the fused kernels' block edges (32 columns, 8 rows)
    ("lstm_f32_wide", dict(mode="lstm", input_size=33, hidden_size=40, seq_len=6, batch=9, dtype="float32")),
    ("gru_f32_wide_bi", dict(mode="gru", input_size=17, hidden_size=37, bidirectional=True, seq_len=5, batch=11, dtype="float32")),
    ("rnn_tanh_f32_wide", dict(mode="rnn", nonlinearity="tanh", input_size=35, hidden_size=33, num_layers=2, seq_len=7, batch=10, dtype="float32")),
    # padded batches of variable length (unsorted, one at full length)
    ("lstm_bi_lengths", dict(mode="lstm", input_size=3, hidden_size=4, bidirectional=True, seq_len=6, batch=4, lengths=[3, 6, 1, 4])),
    ("gru_2l_bi_lengths_batch_first", dict(mode="gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True, seq_len=5, batch=3, lengths=[2, 5, 4])),
    ("rnn_relu_bi_lengths", dict(mode="rnn", nonlinearity="relu", input_size=2, hidden_size=3, bidirectional=True, seq_len=5, batch=3, lengths=[5, 2, 3])),
    ("lstm_f32_wide_lengths", dict(mode="lstm", input_size=33, hidden_size=40, bidirectional=True, seq_len=7, batch=9, dtype="float32", lengths=[7, 3, 5, 1, 7, 6, 2, 4, 7])),
    # unbatched input [seq, input], states [layers * directions, hidden] (batch_first ignored)
    ("lstm_2l_bi_unbatched", dict(mode="lstm", input_size=3, hidden_size=4, num_layers=2, bidirectional=True, seq_len=5, unbatched=True)),
    ("gru_unbatched_batch_first", dict(mode="gru", input_size=4, hidden_size=3, batch_first=True, seq_len=6, unbatched=True)),
    ("rnn_tanh_unbatched", dict(mode="rnn", nonlinearity="tanh", input_size=2, hidden_size=5, seq_len=4, unbatched=True)),
    # cells
    ("gru_cell", dict(mode="gru_cell", input_size=5, hidden_size=4, batch=3)),
    ("rnn_cell_tanh", dict(mode="rnn_cell", nonlinearity="tanh", input_size=5, hidden_size=4, batch=3)),
    ("rnn_cell_relu", dict(mode="rnn_cell", nonlinearity="relu", input_size=5, hidden_size=4, batch=3)),
    ("gru_cell_no_bias", dict(mode="gru_cell", input_size=3, hidden_size=4, batch=2, bias=False)),
    # cells on an unbatched step: x [input], states [hidden]
    ("lstm_cell_unbatched", dict(mode="lstm_cell", input_size=3, hidden_size=4, unbatched=True)),
    ("gru_cell_unbatched", dict(mode="gru_cell", input_size=4, hidden_size=3, unbatched=True)),
    ("rnn_cell_relu_unbatched", dict(mode="rnn_cell", nonlinearity="relu", input_size=3, hidden_size=5, unbatched=True)),
    # LSTM with a projection: h is [.., proj_size], c is [.., hidden_size]
    ("lstm_proj", dict(mode="lstm", input_size=3, hidden_size=5, proj_size=2, seq_len=5, batch=2)),
    ("lstm_proj_2l_bi", dict(mode="lstm", input_size=4, hidden_size=6, proj_size=3, num_layers=2, bidirectional=True, seq_len=5, batch=3)),
    ("lstm_proj_bi_lengths_batch_first", dict(mode="lstm", input_size=3, hidden_size=4, proj_size=3, bidirectional=True, batch_first=True, seq_len=6, batch=4, lengths=[3, 6, 1, 4])),
    ("lstm_proj_f32_unbatched", dict(mode="lstm", input_size=5, hidden_size=7, proj_size=4, seq_len=6, unbatched=True, dtype="float32")),
]


def write_safetensors(path, tensors, metadata):
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian
    data), so that only torch is needed."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def leaf(shape, dtype):
    return torch.randn(*shape, dtype=dtype).requires_grad_(True)


def layer_case(cfg, dtype):
    opts = {k: cfg[k] for k in ("num_layers", "bidirectional", "batch_first", "bias", "nonlinearity", "proj_size") if k in cfg}
    module = MODULES[cfg["mode"]](cfg["input_size"], cfg["hidden_size"], **opts).to(dtype)
    t, d = cfg["seq_len"], 2 if cfg.get("bidirectional") else 1
    bf = cfg.get("batch_first", False)
    rows = cfg.get("num_layers", 1) * d
    batch = () if cfg.get("unbatched") else (cfg["batch"],)
    if cfg.get("unbatched"):
        x = leaf((t, cfg["input_size"]), dtype)
    else:
        b = cfg["batch"]
        x = leaf((b, t, cfg["input_size"]) if bf else (t, b, cfg["input_size"]), dtype)
    # With a projection, h has proj_size features and c hidden_size.
    h_size = cfg.get("proj_size") or cfg["hidden_size"]
    init = {"h0": leaf((rows, *batch, h_size), dtype)}
    if cfg["mode"] == "lstm":
        init["c0"] = leaf((rows, *batch, cfg["hidden_size"]), dtype)
    hx = (init["h0"], init["c0"]) if cfg["mode"] == "lstm" else init["h0"]
    if "lengths" in cfg:
        packed = pack_padded_sequence(x, torch.tensor(cfg["lengths"]), batch_first=bf, enforce_sorted=False)
        out, finals = module(packed, hx)
        output, _ = pad_packed_sequence(out, batch_first=bf, total_length=t)
    else:
        output, finals = module(x, hx)
    results = {"output": output}
    if cfg["mode"] == "lstm":
        results["h_n"], results["c_n"] = finals
    else:
        results["h_n"] = finals
    return module, {"x": x, **init}, results


def cell_case(cfg, dtype):
    opts = {k: cfg[k] for k in ("bias", "nonlinearity") if k in cfg}
    module = CELLS[cfg["mode"]](cfg["input_size"], cfg["hidden_size"], **opts).to(dtype)
    batch = () if cfg.get("unbatched") else (cfg["batch"],)
    x = leaf(batch + (cfg["input_size"],), dtype)
    init = {"h0": leaf(batch + (cfg["hidden_size"],), dtype)}
    if cfg["mode"] == "lstm_cell":
        init["c0"] = leaf(batch + (cfg["hidden_size"],), dtype)
        h1, c1 = module(x, (init["h0"], init["c0"]))
        results = {"h_1": h1, "c_1": c1}
    else:
        results = {"h_1": module(x, init["h0"])}
    return module, {"x": x, **init}, results


def main(only):
    """Writes every case, or with names given only those (their entries in index.json are
    replaced or added; the other cases' files and entries stay as they are)."""
    index = {"torch": torch.__version__, "loss": "sum(output*g_output) + sum(h_n*g_h_n) [+ sum(c_n*g_c_n)]; cells: h_1, c_1", "cases": []}
    if only:
        with open(os.path.join(HERE, "index.json")) as f:
            index["cases"] = [c for c in json.load(f)["cases"] if c["name"] not in only]
    for seed, (name, cfg) in enumerate(CASES, start=100):
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        dtype = torch.float32 if cfg.get("dtype") == "float32" else torch.float64
        make = cell_case if cfg["mode"].endswith("_cell") else layer_case
        module, inputs, results = make(cfg, dtype)
        upstream = {f"g_{k}": torch.randn_like(v) for k, v in results.items()}
        loss = sum((v * upstream[f"g_{k}"]).sum() for k, v in results.items())
        loss.backward()
        tensors = {**results, **upstream, **inputs}
        tensors.update({f"grad.{k}": v.grad for k, v in inputs.items()})
        for pname, p in module.named_parameters():
            tensors[pname] = p
            tensors[f"grad.{pname}"] = p.grad
        case = {"name": name, **cfg, "file": f"{name}.safetensors", "seed": seed}
        write_safetensors(os.path.join(HERE, case["file"]), tensors, {"config": json.dumps(case)})
        case["tensors"] = {k: list(v.shape) for k, v in tensors.items()}
        index["cases"].append(case)
    with open(os.path.join(HERE, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
