"""The metadata writes the IO classes change: fewer of them, and the root document last.

- :mod:`.attributes`: an object's attributes in one metadata write instead of one per attribute;
- :mod:`.references`: a dataset of object references stored in one write, not one per element;
- :mod:`.completion`: the root ``zarr.json`` is a placeholder every reader refuses until the
  write has stored all of its data.
"""
