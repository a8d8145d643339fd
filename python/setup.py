"""Builds the unet Python package: unet/__init__.py and the extension unet._core (docs/python.md).

    pip install ./python        from the repository root (Debian 12: see docs/python.md)
    make python                 the same

The extension is the CPython C API over the C library, linked statically: it builds libunet.a
with the repository's Makefile (`make lib`), then links it with the flags the Makefile prints
(`make -s link-flags`: OpenBLAS, libpng, libtiff, cJSON, OpenMP), so the installed package
does not depend on the checkout.  The Makefile's own test build sets UNET_LIB and UNET_LINK to
the library and flags of its build directory instead (make BUILD=... NO_BLAS=1 ...), and
UNET_CFLAGS to the project's warning flags (-Werror with WERROR=1).
"""
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def version():
    with open(os.path.join(ROOT, "include", "unet.h"), encoding="utf-8") as f:
        return re.search(r'#define UNET_VERSION "([^"]+)"', f.read()).group(1)


class BuildUnet(build_ext):
    def build_extensions(self):
        lib, link = os.environ.get("UNET_LIB"), os.environ.get("UNET_LINK")
        if not lib:
            subprocess.check_call(["make", "-C", ROOT, "--no-print-directory", "-j2", "lib"])
            out = subprocess.check_output(["make", "-s", "-C", ROOT, "--no-print-directory",
                                           "link-flags"], text=True).splitlines()
            lib, link = out[0].strip(), out[1].strip()
        for ext in self.extensions:
            ext.extra_compile_args += shlex.split(os.environ.get("UNET_CFLAGS", ""))
            ext.extra_objects = [lib]
            ext.extra_link_args = shlex.split(link)
            ext.depends = [lib, os.path.join(ROOT, "include", "unet.h"),
                           os.path.join(HERE, "unet", "_core.h")]
        super().build_extensions()


setup(
    name="unet",
    version=version(),
    description="U-Net and FCN image segmentation in C: the Python package",
    packages=["unet"],
    ext_modules=[Extension("unet._core", ["unet/_core.c", "unet/_train.c"],
                           include_dirs=[os.path.join(ROOT, "include")],
                           extra_compile_args=["-std=c11"])],
    cmdclass={"build_ext": BuildUnet},
    install_requires=["numpy"],
    python_requires=">=3.9",
)
