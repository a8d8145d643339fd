"""Exports the benchmark's U-Net to ONNX for the ONNX Runtime side of bench/run.

    /usr/bin/python3 tools/export_onnx.py OUT.onnx

The seed U-Net of tools/unet_torch.py (1 input channel, 2 classes, base 64, depth 4, BatchNorm,
transposed up-convolution) in eval mode, with the benchmark's fixed random weights
(torch.manual_seed(1234), as tools/bench_torch.py), input "x" (N, 1, H, W) and output "logits"
with dynamic N, H and W.  Inference only: ONNX Runtime's training is a separate product.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) != 2:
        print("usage: export_onnx.py OUT.onnx", file=sys.stderr)
        return 2
    import torch
    from unet_torch import UNet

    torch.manual_seed(1234)
    model = UNet(n_channels=1, n_classes=2, base=64, depth=4).eval()
    x = torch.zeros(1, 1, 64, 64)
    axes = {0: "n", 2: "h", 3: "w"}
    tmp = sys.argv[1] + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, x, tmp, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": axes, "logits": axes}, opset_version=13)
    os.replace(tmp, sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
