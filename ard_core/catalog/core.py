"""The :class:`Catalog`: the connection (:mod:`.base`) with the app's named reads (:mod:`.browse`, :mod:`.results`)."""

from __future__ import annotations

from ard_core.catalog.browse import BrowseReads
from ard_core.catalog.results import ResultReads


class Catalog(BrowseReads, ResultReads):
    """A connection to the catalog: ``Catalog.open(path)`` to write, ``Catalog.open(path, read_only=True)``
    to read. Use as a context manager or call :meth:`close`."""
