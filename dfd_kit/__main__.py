"""``python -m dfd_kit``: see :mod:`dfd_kit.cli`."""
import sys

from .cli import main

sys.exit(main())
