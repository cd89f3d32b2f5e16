"""The one compiled piece: the backups' hot loops in C (rusing_ops/backups/_speedups.c: the backup's row reader and
the restore's INSERT literal check). Everything else is in pyproject.toml. ``optional``: where no C compiler is at
hand the install goes on and the pure-Python code runs instead (rusing_ops.backups.rawrows.ACCELERATED says which);
the Docker image builds it in a build stage that has one."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("rusing_ops.backups._speedups", ["rusing_ops/backups/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
