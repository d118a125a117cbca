"""Builds the cffi extension; all other metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["src/mqstore/_native/build.py:ffibuilder"])
