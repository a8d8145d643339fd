"""PyTorch side of the benchmark (bench/run): the same configurations as bench/bench_unet.c.

    /usr/bin/python3 tools/bench_torch.py infer|train SIZE BATCH THREADS RUNS

The seed U-Net of tools/unet_torch.py (1 input channel, 2 classes, base 64, depth 4, BatchNorm,
transposed up-convolution) with fixed random weights.  infer: eval mode under
torch.inference_mode(); train: forward in training mode, cross-entropy, backward, Adam step.
One warm-up call, then RUNS timed calls; prints one line in bench_unet's format:

    RESULT impl=torch mode=infer size=512 batch=1 threads=2 runs=5 median_s=... min_s=...
           max_s=... rss_mb=...

rss_mb is the process's peak resident set (getrusage ru_maxrss), the interpreter and the
library included, as for the other implementations.
"""
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) != 6 or sys.argv[1] not in ("infer", "train"):
        print("usage: bench_torch.py infer|train SIZE BATCH THREADS RUNS", file=sys.stderr)
        return 2
    mode = sys.argv[1]
    size, batch, threads, runs = (int(a) for a in sys.argv[2:6])

    import torch
    import torch.nn.functional as F
    from unet_torch import UNet

    torch.set_num_threads(threads)
    torch.manual_seed(1234)
    model = UNet(n_channels=1, n_classes=2, base=64, depth=4)
    g = torch.Generator().manual_seed(42)
    x = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    target = torch.randint(0, 2, (batch, size, size), generator=g)

    if mode == "infer":
        model.eval()

        def call():
            with torch.inference_mode():
                model(x)
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def call():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), target)
            loss.backward()
            opt.step()

    call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"RESULT impl=torch mode={mode} size={size} batch={batch} threads={threads} runs={runs} "
          f"median_s={statistics.median(times):.4f} min_s={min(times):.4f} "
          f"max_s={max(times):.4f} rss_mb={rss_mb:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
