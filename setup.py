"""Kept for tools that still call `python setup.py`; the project is described
in pyproject.toml (version: dcjax/__init__.py)."""
from setuptools import setup

setup()
