"""The project's exception base: every error caused by bad input derives from it.

Faces (CLI, servers) catch :class:`FediotError` and print its message as one line; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FediotError(Exception):
    """Bad input or an impossible request; the message names the file, line or key at fault."""
