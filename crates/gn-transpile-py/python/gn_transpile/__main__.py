"""The ``gn-transpile`` command, as installed by the Python package."""

import os
import sys

from . import _native


def main():
    # `gn-transpile export-nir` runs Python: this one, which has the package.
    os.environ.setdefault("GN_TRANSPILE_PYTHON", sys.executable)
    sys.exit(_native.main(["gn-transpile", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
