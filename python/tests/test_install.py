"""`pip install ./python` offline, as docs/python.md says (Debian 12's pip, no index, no build
isolation needed): the installed package imports and predicts as the one under test."""
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT


def test_pip_install_offline(tmp_path, unet_mod):
    prefix = tmp_path / "prefix"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--prefix",
                        str(prefix), os.path.join(ROOT, "python")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    site = [os.path.join(dp) for dp, dn, fn in os.walk(prefix) if "__init__.py" in fn
            and os.path.basename(dp) == "unet"]
    assert len(site) == 1, site
    code = ("import unet, numpy as np; m = unet.create('unet', base=2, depth=2, seed=4); "
            "x = np.linspace(0, 1, 48 * 40, dtype=np.float32).reshape(48, 40); "
            "print(unet.__file__); np.save(__import__('sys').argv[1], m.predict(x, logits=True)[1])")
    out = tmp_path / "logits.npy"
    r = subprocess.run([sys.executable, "-P", "-c", code, str(out)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(site[0])})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(prefix))
    m = unet_mod.create("unet", base=2, depth=2, seed=4)
    x = np.linspace(0, 1, 48 * 40, dtype=np.float32).reshape(48, 40)
    assert np.load(out).tobytes() == m.predict(x, logits=True)[1].tobytes()
