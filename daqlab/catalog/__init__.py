"""Exploring many saved runs: :class:`Catalog` lists every run under a folder, kept fast by an
index in the folder; ``cat.browse()`` shows them in a notebook, ``daqlab ls DIR`` on a terminal."""

from daqlab.catalog._catalog import COLUMNS, Catalog
from daqlab.catalog._index import INDEX_NAME

__all__ = ["COLUMNS", "INDEX_NAME", "Catalog"]
