"""unet export --onnx for every architecture: the file passes the ONNX checker (python3-onnx) and
ONNX Runtime (tests/onnx) reproduces unet's logits within 1e-4 at two image sizes, one of them
a batch of two, with every parameter and batch-norm statistic drawn at random."""
import numpy as np
import onnx
import pytest

from conftest import perturb, run_ort, run_unet

TOL = 1e-4

# name: (arch, create options, two input sizes (h, w) that unet_model_forward accepts)
ARCHS = {
    "unet": ("unet", dict(base=4, depth=3), [(52, 44), (64, 80)]),
    "unet-bilinear": ("unet", dict(base=4, depth=3, bilinear=True), [(50, 46), (64, 72)]),
    "unet-paper": ("unet-paper", dict(base=4, depth=2), None),
    "fcn32s": ("fcn32s", dict(base=2), [(64, 72), (96, 90)]),
    "fcn16s": ("fcn16s", dict(base=2), [(64, 72), (96, 96)]),
    "fcn8s": ("fcn8s", dict(base=2), [(61, 70), (96, 90)]),
}


@pytest.fixture(scope="module")
def exported(unet_mod, tmp_path_factory):
    """Every architecture exported by the CLI and run in ONNX Runtime (one node process)."""
    d = tmp_path_factory.mktemp("onnx")
    rng = np.random.default_rng(7)
    cases, jobs = {}, []
    for name, (arch, opts, sizes) in ARCHS.items():
        unet_mod.create(arch, seed=3, **opts).save(d / f"{name}.fresh.safetensors")
        perturb(d / f"{name}.fresh.safetensors", d / f"{name}.safetensors", seed=11)
        m = unet_mod.load(d / f"{name}.safetensors")
        if sizes is None:  # valid convolutions: two valid tile sizes
            s0 = m._m.round_size(64)
            s1 = m._m.round_size(s0 + 1)
            sizes = [(s0, s1), (s1, s1)]
        run_unet("export", "--onnx", d / f"{name}.onnx", d / f"{name}.safetensors")
        refs = []
        for k, (h, w) in enumerate(sizes):
            x = rng.normal(0.5, 0.5, (k + 1, m.in_channels, h, w)).astype(np.float32)
            refs.append(m.forward(x))
            jobs.append((d / f"{name}.onnx", x))
        cases[name] = (d / f"{name}.onnx", m, refs)
    # The probabilities variant of one model.
    run_unet("export", "--onnx", d / "prob.onnx", "--probabilities", d / "unet.safetensors")
    xp = rng.normal(0.5, 0.5, (1, 1, 40, 48)).astype(np.float32)
    jobs.append((d / "prob.onnx", xp))
    outs = run_ort(jobs, d)
    results, i = {}, 0
    for name, (path, m, refs) in cases.items():
        results[name] = (path, m, list(zip(refs, outs[i:i + len(refs)])))
        i += len(refs)
    results["prob"] = (d / "prob.onnx", cases["unet"][1], xp, outs[i])
    return results


@pytest.mark.parametrize("name", list(ARCHS))
def test_onnx_matches_unet(exported, name, unet_mod):
    path, m, pairs = exported[name]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == m.in_channels
    # Initializers: the checkpoint's tensors by name (counters aside) and the graph's constants.
    names = {t.name for t in model.graph.initializer}
    wanted = {n for n, shape, _ in m.tensors() if not n.endswith("num_batches_tracked")}
    assert wanted <= names and all(n.startswith("unet_const.") or ".offset" in n
                                   for n in names - wanted)
    for ref, got in pairs:
        assert got.shape == ref.shape
        err = float(np.abs(got - ref).max())
        print(f"{name} {ref.shape}: max |ORT - unet| = {err:.2g} (max |logit| {np.abs(ref).max():.2g})")
        assert err <= TOL, f"{name} {ref.shape}: max |ORT - unet| = {err:.3g}"
        assert float(np.abs(ref).max()) > 0.1  # logits of some size, not a vanishing network


def test_onnx_probabilities(exported, unet_mod):
    path, m, x, got = exported["prob"]
    logits = m.forward(x)
    prob = logits[0].copy()
    unet_mod._core.probabilities(prob, 2, 40, 48)
    assert got.shape == (1, 2, 40, 48)
    assert float(np.abs(got[0] - prob).max()) <= TOL
    assert onnx.load(str(path)).graph.output[0].name == "probabilities"


def test_export_errors(tmp_path, small_model):
    path, _ = small_model
    r = run_unet("export", path, check=False)
    assert r.returncode == 2 and "--onnx" in r.stderr
    r = run_unet("export", "--onnx", tmp_path / "no" / "dir" / "x.onnx", path, check=False)
    assert r.returncode == 1 and "x.onnx" in r.stderr
    r = run_unet("export", "--onnx", tmp_path / "x.onnx", tmp_path / "missing.safetensors",
                 check=False)
    assert r.returncode == 1 and "missing.safetensors" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
