"""The distribution's version, in one place (read by packaging tools and ``--version``)."""

__version__ = "0.2.0"
