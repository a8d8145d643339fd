#!/usr/bin/python3
"""Checkpoints between PyTorch (.pth) and unet (.safetensors).

    /usr/bin/python3 tools/convert.py model.pth model.safetensors      # PyTorch -> unet
    /usr/bin/python3 tools/convert.py model.safetensors model.pth      # unet -> PyTorch

A .pth may hold a state_dict, or a dict with one under 'state_dict' or 'model' (as trainers save
them); entries that are not tensors (milesial/Pytorch-UNet stores 'mask_values') are dropped.
The tensor names are kept: unet uses PyTorch's names, so milesial's checkpoints load in unet and
unet's load in milesial's UNet (strict=True).  unet infers the architecture from the names and
shapes; --check additionally builds tools/unet_torch.UNet for it and loads the weights strictly.
Needs Debian's python3-torch (apt-get install python3-torch); unet itself never needs Python.
"""
import argparse
import sys

import torch

import st


def load_pth(path):
    obj = torch.load(path, map_location="cpu")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: not a state_dict (got {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(set(obj) - set(tensors))
    if dropped:
        print(f"{path}: dropped non-tensor entries: {', '.join(dropped)}")
    # 'module.' prefixes come from DataParallel.
    return {k[7:] if k.startswith("module.") else k: v.contiguous() for k, v in tensors.items()}


def check(state, meta):
    from unet_torch import UNet, from_meta
    if meta.get("arch"):
        model = from_meta(meta)
    else:
        w = state["inc.double_conv.0.weight"]
        depth = 0
        while f"down{depth + 1}.maxpool_conv.1.double_conv.0.weight" in state:
            depth += 1
        bn = "inc.double_conv.1.weight" in state
        model = UNet(n_channels=w.shape[1], n_classes=state["outc.conv.weight"].shape[0],
                     base=w.shape[0], depth=depth, bilinear="up1.up.weight" not in state,
                     bias="inc.double_conv.0.bias" in state, paper=not bn)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    print(f"check: loads strictly into tools/unet_torch.UNet "
          f"({sum(p.numel() for p in model.parameters())} parameters)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--check", action="store_true", help="load into the reference UNet strictly")
    a = ap.parse_args()
    if a.src.endswith(".safetensors"):
        tensors, meta = st.load(a.src)
        tensors = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("optimizer.")}
        if a.check:
            check(tensors, meta)
        torch.save(tensors, a.dst)
        print(f"wrote {a.dst}: {len(tensors)} tensors")
    else:
        tensors = load_pth(a.src)
        if a.check:
            check(tensors, {})
        st.save(a.dst, tensors)
        print(f"wrote {a.dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
