"""webhook-poller: waits for AI video generations so your workflow does not have to."""

__version__ = "0.1.0"
