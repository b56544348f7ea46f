"""Peak RSS of PyTorch RNN training/inference steps: python3 torch_rnn_memory.py lstm B T I H train|infer

Copied from shared/bench/torch_rnn_memory.py; the thread count comes from TORCH_THREADS (default 1,
as there), so that benches/memory.rs can run both sides with the same count."""
import os, sys, torch, resource
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
cell, b, t, i, h, mode = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](i, h)
x = torch.randn(t, b, i)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    if mode == "train":
        m.zero_grad(set_to_none=True); out, _ = m(x); out.sum().backward()
    else:
        with torch.no_grad(): m(x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
act = t * b * h * 4 / 1e6
print(f"{cell} B={b} T={t} I={i} H={h} {mode}: peak RSS {peak/1e3:.0f} MB, growth over baseline {(peak-base)/1e3:.1f} MB; one [T,B,H] f32 tensor = {act:.1f} MB")
