"""The one compiled piece: rawrows.py's packet scan in C (rusing_ops/backups/_speedups.c). Everything else is in
pyproject.toml. ``optional``: where no C compiler is at hand (the slim Docker image) the install goes on and the
pure-Python scan runs instead (rusing_ops.backups.rawrows.ACCELERATED says which)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("rusing_ops.backups._speedups", ["rusing_ops/backups/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
