"""``python -m hypermeta.cli``: the same as the ``hypermeta`` console command."""

import sys

from hypermeta.cli import main

sys.exit(main())
