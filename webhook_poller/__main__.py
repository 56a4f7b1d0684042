"""``python -m webhook_poller serve`` is the same as the ``webhook-poller`` command."""

import sys

from .cli import main

sys.exit(main())
