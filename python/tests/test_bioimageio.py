"""unet export --bioimageio: the package's rdf.yaml holds what the bioimage.io model spec 0.5
requires (checked field by field below, written from the spec's model description, since
bioimageio.core cannot be installed offline), its files match their SHA-256, and its test input,
preprocessed as the rdf says and run through weights.onnx in ONNX Runtime, gives its test output
within the rdf's tolerance."""
import datetime
import hashlib
import os
import re
import zipfile

import numpy as np
import onnx
import pytest
import yaml

from conftest import perturb, run_ort, run_unet, sample_png

AXIS_TYPES = {"batch", "channel", "index", "time", "space"}
DTYPES = {"float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
          "int64", "bool"}
PREPROCESSING = {"binarize", "clip", "ensure_dtype", "scale_linear", "sigmoid",
                 "zero_mean_unit_variance", "scale_range"}
WEIGHTS = {"keras_hdf5", "onnx", "pytorch_state_dict", "tensorflow_js",
           "tensorflow_saved_model_bundle", "torchscript"}
COVER_EXT = (".gif", ".jpeg", ".jpg", ".png", ".svg")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def validate_rdf(pkg):
    """The problems of the package in folder pkg against the bioimage.io model spec 0.5 (the
    required fields, their types and constraints, the files and the test tensors' shapes);
    an empty list when it conforms."""
    bad = []

    def need(cond, msg):
        if not cond:
            bad.append(msg)
        return cond

    rdf = yaml.safe_load(open(os.path.join(pkg, "rdf.yaml"), encoding="utf-8"))

    def file_ok(where, descr, sha_required=True):
        src = descr.get("source") if isinstance(descr, dict) else descr
        if not need(isinstance(src, str) and os.path.isfile(os.path.join(pkg, src)),
                    f"{where}: source {src!r} is not a file in the package"):
            return None
        path = os.path.join(pkg, src)
        if isinstance(descr, dict) and (sha_required or "sha256" in descr):
            need(descr.get("sha256") == sha256(path), f"{where}: sha256 does not match {src}")
        return path

    for key in ("type", "format_version", "name", "description", "authors", "cite", "license",
                "documentation", "inputs", "outputs", "weights"):
        need(key in rdf, f"missing required field {key}")
    if bad:
        return bad
    need(rdf["type"] == "model", "type is not model")
    need(re.fullmatch(r"0\.5\.\d+", str(rdf["format_version"])), "format_version is not 0.5.x")
    name = rdf["name"]
    need(isinstance(name, str) and 5 <= len(name) <= 128 and
         all(c.isascii() and (c.isalnum() or c in "_- ()") for c in name), f"bad name {name!r}")
    need(isinstance(rdf["description"], str) and len(rdf["description"]) <= 1024,
         "description: a string of at most 1024 characters")
    need(isinstance(rdf["authors"], list) and rdf["authors"] and
         all(isinstance(a, dict) and isinstance(a.get("name"), str) and a["name"].strip()
             for a in rdf["authors"]), "authors: a non-empty list of {name}")
    need(isinstance(rdf["cite"], list) and rdf["cite"] and
         all(isinstance(c, dict) and isinstance(c.get("text"), str) and (c.get("doi") or c.get("url"))
             for c in rdf["cite"]), "cite: a non-empty list of {text, doi or url}")
    need(isinstance(rdf["license"], str) and re.fullmatch(r"[A-Za-z0-9.+-]+", rdf["license"]),
         "license: an SPDX identifier")
    doc = rdf["documentation"]
    need(isinstance(doc, str) and doc.endswith(".md") and file_ok("documentation", doc, False),
         "documentation: a .md file in the package")
    for c in rdf.get("covers", []):
        need(str(c).lower().endswith(COVER_EXT) and file_ok("covers", c, False), f"cover {c}")
    ts = rdf.get("timestamp")
    if ts is not None and not isinstance(ts, datetime.datetime):
        try:
            datetime.datetime.fromisoformat(str(ts))
        except ValueError:
            bad.append(f"timestamp {ts!r} is not ISO 8601")
    for i, a in enumerate(rdf.get("attachments", [])):
        file_ok(f"attachments[{i}]", a)
    tensors = [("inputs", t) for t in rdf["inputs"]] + [("outputs", t) for t in rdf["outputs"]]
    need(rdf["inputs"] and rdf["outputs"], "inputs and outputs must not be empty")
    ids = [t.get("id", "input" if kind == "inputs" else "output") for kind, t in tensors]
    need(len(ids) == len(set(ids)), f"duplicate tensor ids {ids}")
    need(all(re.fullmatch(r"[a-z_][a-z0-9_]*", i) and len(i) <= 32 for i in ids),
         f"tensor ids must be lower-case identifiers: {ids}")
    # Axis sizes that others may refer to (int or parameterized, not batch).
    independent = {}
    for (kind, t), tid in zip(tensors, ids):
        for a in t.get("axes", []):
            if a.get("type") != "batch" and isinstance(a.get("size"), (int, dict)) and \
                    not (isinstance(a.get("size"), dict) and "tensor_id" in a["size"]):
                independent[(tid, a.get("id", a.get("type")))] = a
    arrays = {}
    for (kind, t), tid in zip(tensors, ids):
        where = f"{kind}[{tid}]"
        axes = t.get("axes")
        if not need(isinstance(axes, list) and axes, f"{where}: axes must be a non-empty list"):
            continue
        types = [a.get("type") for a in axes]
        need(all(ty in AXIS_TYPES for ty in types), f"{where}: axis types {types}")
        need(types.count("batch") <= 1, f"{where}: more than one batch axis")
        aids = [a.get("id", a.get("type")) for a in axes]
        need(len(aids) == len(set(aids)), f"{where}: duplicate axis ids {aids}")
        for a, aid in zip(axes, aids):
            if a["type"] == "batch":
                need(aid == "batch" and a.get("size") in (None, 1), f"{where}: batch axis")
                continue
            need(re.fullmatch(r"[a-z_][a-z0-9_]*", aid) and len(aid) <= 16, f"{where}: axis id {aid}")
            if a["type"] == "channel":
                cn = a.get("channel_names")
                need(isinstance(cn, list) and cn and all(IDENT.match(str(c)) for c in cn),
                     f"{where}: channel_names must be a non-empty list of identifiers")
                continue
            size = a.get("size")
            if isinstance(size, int):
                need(size > 0, f"{where}.{aid}: size must be > 0")
            elif isinstance(size, dict) and "min" in size:
                need(kind == "inputs", f"{where}.{aid}: outputs cannot have a parameterized size")
                need(size.get("min", 0) > 0 and size.get("step", 0) > 0,
                     f"{where}.{aid}: min and step must be > 0")
            elif isinstance(size, dict) and "tensor_id" in size:
                ref = (size["tensor_id"], size.get("axis_id"))
                need(ref in independent and ref != (tid, aid) and isinstance(size.get("offset", 0), int),
                     f"{where}.{aid}: bad size reference {size}")
                if "halo" in a and ref in independent:
                    halo, rs = a["halo"], independent[ref]["size"]
                    mn = (rs if isinstance(rs, int) else rs["min"]) + size.get("offset", 0)
                    need(isinstance(halo, int) and halo >= 1 and halo % 2 == 0 and mn - 2 * halo >= 1,
                         f"{where}.{aid}: halo {halo} with minimum size {mn}")
            else:
                bad.append(f"{where}.{aid}: no valid size {size!r}")
            need("halo" not in a or isinstance(size, dict) and "tensor_id" in size,
                 f"{where}.{aid}: a halo needs a size reference")
        dtype = (t.get("data") or {}).get("type", "float32")
        need(dtype in DTYPES, f"{where}: data type {dtype}")
        tt = t.get("test_tensor")
        path = file_ok(f"{where}.test_tensor", tt) if need(isinstance(tt, dict), f"{where}: test_tensor") else None
        if path:
            need(path.endswith(".npy"), f"{where}: test tensor must be .npy")
            arr = np.load(path)
            arrays[tid] = arr
            need(arr.dtype.name == dtype, f"{where}: test tensor dtype {arr.dtype} != {dtype}")
            need(arr.ndim == len(axes), f"{where}: test tensor has {arr.ndim} dims for {len(axes)} axes")
        for p in t.get("preprocessing", []) if kind == "inputs" else []:
            pid, kw = p.get("id"), p.get("kwargs", {})
            need(pid in PREPROCESSING, f"{where}: unknown preprocessing {pid}")
            need(set(kw.get("axes", [])) <= set(aids), f"{where}: {pid} axes not among {aids}")
            if pid == "ensure_dtype":
                need(kw.get("dtype") in DTYPES, f"{where}: ensure_dtype {kw}")
            if pid == "scale_linear":
                need(kw.get("gain", 1.0) != 1.0 or kw.get("offset", 0.0) != 0.0,
                     f"{where}: redundant scale_linear")
            if pid == "scale_range":
                lo, hi = kw.get("min_percentile", 0.0), kw.get("max_percentile", 100.0)
                need(0 <= lo < 100 and 1 < hi <= 100 and lo < hi, f"{where}: scale_range {kw}")
    # Test tensor sizes against the axes (parameterized and referenced sizes).
    for (kind, t), tid in zip(tensors, ids):
        if tid not in arrays:
            continue
        for k, a in enumerate(t["axes"]):
            s, size = arrays[tid].shape[k], a.get("size")
            if isinstance(size, int):
                need(s == size, f"{tid}.{a.get('id')}: test size {s} != {size}")
            elif isinstance(size, dict) and "min" in size:
                need(s >= size["min"] and (s - size["min"]) % size["step"] == 0,
                     f"{tid}.{a['id']}: test size {s} is not {size['min']} + n * {size['step']}")
            elif isinstance(size, dict) and "tensor_id" in size:
                rt = dict(zip(ids, [x for _, x in tensors]))[size["tensor_id"]]
                rk = [x.get("id", x.get("type")) for x in rt["axes"]].index(size["axis_id"])
                if size["tensor_id"] in arrays:
                    want = arrays[size["tensor_id"]].shape[rk] + size.get("offset", 0)
                    need(s == want, f"{tid}.{a['id']}: test size {s}, reference says {want}")
            elif a["type"] == "channel":
                need(s == len(a["channel_names"]), f"{tid}: {s} channels for {a['channel_names']}")
    weights = rdf["weights"]
    need(isinstance(weights, dict) and weights and set(weights) <= WEIGHTS,
         f"weights: at least one known format, got {list(weights) if isinstance(weights, dict) else weights}")
    if isinstance(weights, dict) and "onnx" in weights:
        w = weights["onnx"]
        path = file_ok("weights.onnx", w)
        need(isinstance(w.get("opset_version"), int) and w["opset_version"] >= 7,
             "weights.onnx: opset_version >= 7")
        if path:
            model = onnx.load(path)
            onnx.checker.check_model(model)
            need(model.opset_import[0].version == w.get("opset_version"),
                 "weights.onnx: opset_version differs from the file's")
    return bad


def preprocess(x, tensor):
    """The rdf's preprocessing of an input tensor, as the spec defines each step."""
    aids = [a.get("id", a["type"]) for a in tensor["axes"]]
    for p in tensor.get("preprocessing", []):
        kw = p.get("kwargs", {})
        if p["id"] == "ensure_dtype":
            x = x.astype(kw["dtype"])
        elif p["id"] == "scale_linear":
            x = x * kw.get("gain", 1.0) + kw.get("offset", 0.0)
        elif p["id"] == "scale_range":
            ax = tuple(aids.index(a) for a in kw["axes"])
            lo = np.percentile(x, kw.get("min_percentile", 0.0), axis=ax, keepdims=True)
            hi = np.percentile(x, kw.get("max_percentile", 100.0), axis=ax, keepdims=True)
            x = (x - lo) / (hi - lo + kw.get("eps", 1e-6))
        else:
            raise AssertionError(f"preprocessing {p['id']} is not implemented in this test")
    return x


def check_package(pkg, tmp_path):
    """Validates pkg (a folder) and runs its test input through its ONNX weights; returns the
    rdf and the largest deviation from the test output."""
    problems = validate_rdf(pkg)
    assert not problems, "\n".join(problems)
    rdf = yaml.safe_load(open(os.path.join(pkg, "rdf.yaml")))
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    x = preprocess(np.load(os.path.join(pkg, inp["test_tensor"]["source"])), inp)
    want = np.load(os.path.join(pkg, out["test_tensor"]["source"]))
    (got,) = run_ort([(os.path.join(pkg, rdf["weights"]["onnx"]["source"]), x)], tmp_path)
    tol = rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]
    assert got.shape == want.shape
    err = np.abs(got - want)
    assert (err <= tol["absolute_tolerance"] + tol["relative_tolerance"] * np.abs(want)).all(), \
        f"max |ORT - test output| = {err.max():.3g}"
    print(f"{pkg}: {x.shape} max |ORT - test output| = {err.max():.3g}")
    assert 0.0 <= want.min() and want.max() <= 1.0 and want.std() > 0
    return rdf, float(err.max())


@pytest.fixture(scope="module")
def models(unet_mod, tmp_path_factory):
    d = tmp_path_factory.mktemp("bio")
    out = {}
    for name, arch, opts in (("unet", "unet", dict(base=4, depth=3)),
                             ("paper", "unet-paper", dict(base=4, depth=2)),
                             ("fcn8s", "fcn8s", dict(base=2))):
        unet_mod.create(arch, seed=2, **opts).save(d / f"{name}.fresh.safetensors")
        perturb(d / f"{name}.fresh.safetensors", d / f"{name}.safetensors", seed=5)
        out[name] = d / f"{name}.safetensors"
    return out


def test_package_folder_uint8(unet_mod, models, tmp_path):
    pkg = tmp_path / "pkg"
    run_unet("export", "--bioimageio", pkg, models["unet"], "--sample", sample_png(),
             "--name", "ISBI membranes U-Net", "--authors", "A. Author; B. Author",
             "--training-data", "ISBI 2012 slices 00-21", "--training-command",
             "unet train --images data/sample/train/images --masks data/sample/train/masks")
    rdf, err = check_package(pkg, tmp_path)
    assert [a["name"] for a in rdf["authors"]] == ["A. Author", "B. Author"]
    assert rdf["inputs"][0]["data"]["type"] == "uint8"
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == \
        ["ensure_dtype", "scale_linear", "ensure_dtype"]
    assert rdf["outputs"][0]["axes"][2]["halo"] == 32
    assert sorted(os.listdir(pkg)) == sorted(["rdf.yaml", "README.md", "weights.onnx", "cover.png",
                                             "test_input.npy", "test_output.npy",
                                             "model.safetensors"])
    readme = (pkg / "README.md").read_text()
    assert readme.startswith("# ISBI membranes U-Net: model card and validation")
    assert "ISBI 2012 slices 00-21" in readme and "unet train --images" in readme
    assert "## Validation" in readme and "## Limits" in readme
    # The attached checkpoint is the model itself.
    x = np.load(pkg / "test_input.npy")[0, 0]
    a = unet_mod.load(pkg / "model.safetensors").predict(x, logits=True)[1]
    assert a.tobytes() == unet_mod.load(models["unet"]).predict(x, logits=True)[1].tobytes()
    # A second export to the same folder is refused and leaves it as it was.
    before = {f: sha256(pkg / f) for f in os.listdir(pkg)}
    r = run_unet("export", "--bioimageio", pkg, models["unet"], "--sample", sample_png(),
                 check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    assert {f: sha256(pkg / f) for f in os.listdir(pkg)} == before
    assert sorted(os.listdir(tmp_path)) == ["ort_in0.npy", "ort_jobs.json", "ort_out0.npy", "pkg"]


def test_package_zip_uint16_valid_convolutions(unet_mod, models, tmp_path):
    """The paper's U-Net (output smaller than the input, no halo) from a 16-bit sample, whose
    preprocessing is scale_range, in a zip."""
    img = unet_mod.imread(sample_png()).astype(np.uint16) * 40 + 1000
    img[::7, ::5] += 3000  # a long tail above the 99.8th percentile
    np.save(tmp_path / "sample16.npy", img)
    zpath = tmp_path / "paper.zip"
    run_unet("export", "--bioimageio", zpath, models["paper"], "--sample",
             tmp_path / "sample16.npy", "--no-checkpoint", "--license", "MIT")
    with zipfile.ZipFile(zpath) as z:
        assert z.testzip() is None
        z.extractall(tmp_path / "unzipped")
    rdf, err = check_package(tmp_path / "unzipped", tmp_path)
    assert "attachments" not in rdf and rdf["license"] == "MIT"
    assert rdf["inputs"][0]["data"]["type"] == "uint16"
    scale = rdf["inputs"][0]["preprocessing"][1]
    assert scale["id"] == "scale_range" and scale["kwargs"]["max_percentile"] == 99.8
    ys = rdf["outputs"][0]["axes"][2]
    assert ys["size"]["offset"] < 0 and "halo" not in ys


def test_package_fcn_float32(unet_mod, models, tmp_path):
    img = unet_mod.imread(sample_png()).astype(np.float32) / 255.0
    np.save(tmp_path / "sample.npy", img[:200, :300])
    run_unet("export", "--bioimageio", tmp_path / "fcn", models["fcn8s"], "--sample",
             tmp_path / "sample.npy")
    rdf, err = check_package(tmp_path / "fcn", tmp_path)
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == ["ensure_dtype"]
    assert rdf["inputs"][0]["axes"][2]["size"]["step"] == 32
    assert rdf["cite"][0]["doi"] == "10.1109/CVPR.2015.7298965"


def test_validator_finds_faults(models, tmp_path):
    """The check above can fail: a package with a wrong digest, a missing field, a test tensor
    of the wrong size, a bad name and an odd halo gets each fault reported."""
    pkg = tmp_path / "pkg"
    run_unet("export", "--bioimageio", pkg, models["unet"], "--sample", sample_png(),
             "--no-checkpoint")
    assert validate_rdf(pkg) == []
    rdf = yaml.safe_load(open(pkg / "rdf.yaml"))
    del rdf["cite"]
    rdf["name"] = "x!"
    rdf["weights"]["onnx"]["sha256"] = "0" * 64
    rdf["outputs"][0]["axes"][3]["halo"] = 33
    rdf["inputs"][0]["axes"][2]["size"]["step"] = 1000
    yaml.safe_dump(rdf, open(pkg / "rdf.yaml", "w"))
    problems = "\n".join(validate_rdf(pkg))
    assert "missing required field cite" in problems
    rdf["cite"] = [{"text": "x", "doi": "10.1/x"}]
    yaml.safe_dump(rdf, open(pkg / "rdf.yaml", "w"))
    problems = "\n".join(validate_rdf(pkg))
    for fault in ("bad name", "sha256 does not match weights.onnx", "halo 33",
                  "is not 72 + n * 1000"):
        assert fault in problems, (fault, problems)


def test_bioimageio_errors(unet_mod, models, tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    np.save(tmp_path / "rgb.npy", np.moveaxis(rgb, -1, 0))
    r = run_unet("export", "--bioimageio", tmp_path / "p", models["unet"], "--sample",
                 tmp_path / "rgb.npy", check=False)
    assert r.returncode == 2 and "3 channels; the model takes 1" in r.stderr
    np.save(tmp_path / "tiny.npy", np.zeros((20, 20), np.uint8))
    r = run_unet("export", "--bioimageio", tmp_path / "p.zip", models["unet"], "--sample",
                 tmp_path / "tiny.npy", check=False)
    assert r.returncode == 2 and "smaller than the model's smallest input" in r.stderr
    r = run_unet("export", "--bioimageio", tmp_path / "p", models["unet"], check=False)
    assert r.returncode == 2 and "--sample" in r.stderr
    r = run_unet("export", "--bioimageio", tmp_path / "p", models["unet"], "--sample",
                 sample_png(), "--name", "bad/name", check=False)
    assert r.returncode == 2 and "name" in r.stderr
    # Nothing left behind by the failures: no package, no temporary folder.
    assert sorted(os.listdir(tmp_path)) == ["rgb.npy", "tiny.npy"]
