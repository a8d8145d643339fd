#!/usr/bin/python3
"""Writes tests/golden/*.safetensors: PyTorch's results for unet's ops, blocks and models.

This script is the specification the C tests check against.  Run it with Debian's python3-torch:
    apt-get install -y python3-torch && /usr/bin/python3 tools/make_golden.py tests/golden
Each module in tools/golden/ defines make(out_dir) and writes one or more files.  Every file holds
cases "case<i>.<tensor>" with the case's configuration in the int64 tensor "case<i>.cfg"
(its meaning is documented in the module).  Fixed seeds: reruns give the same bytes.
"""
import importlib
import os
import pkgutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden"
    only = sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    import golden
    for m in pkgutil.iter_modules(golden.__path__):
        if only and m.name not in only:
            continue
        mod = importlib.import_module("golden." + m.name)
        torch.manual_seed(1234)
        mod.make(out)
        print("wrote", m.name)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"golden files: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
