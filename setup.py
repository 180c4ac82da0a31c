"""Only the compiled part of the build: everything else is in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=["rstscope/connections/_kernel_build.py:ffibuilder", "rstscope/reader/_compiled_build.py:ffibuilder"]
)
