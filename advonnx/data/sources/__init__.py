"""Data sources: one module per kind of data, each a ``matches(path)`` and a ``load(request)``.

:mod:`advonnx.data.load` lists them in ``SOURCES`` and reads a path with the first that
matches: an ``.npz`` (:mod:`.npz`), a physiological recording (:mod:`.recording`), a folder
(:mod:`.folder`), a CSV manifest (:mod:`.manifest`), else one image file (:mod:`.single`).
Folders, manifests and single files list samples as :class:`~.files.Item` and share
:func:`~.files.load_items` (the per-sample pipeline, ordering by size, block reading).
"""
