"""The data layer's exception: bad N-BaIoT files, layouts, archives or split requests."""

from __future__ import annotations

from fediot.core.errors import FediotError


class DataError(FediotError):
    """A dataset file, folder, archive or request is unusable; the message names file, line, key."""
