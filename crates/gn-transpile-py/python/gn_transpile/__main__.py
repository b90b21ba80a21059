"""The ``gn-transpile`` command, as installed by the Python package."""

import sys

from . import _native


def main():
    sys.exit(_native.main(["gn-transpile", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
