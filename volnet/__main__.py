"""``python -m volnet``: the ``volnet`` command (:mod:`volnet.cli.main`)."""

import sys

from volnet.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
