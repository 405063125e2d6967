"""Iterators known to be safe to read from several threads at once, by class name.

An iterator says it may be read concurrently with a ``concurrent_reads = True``
attribute. Iterators from other packages (neuroconv's, for example) say nothing, so
they are read one region at a time. This registry lets a user, or this package for
the cases that are certain, say so without patching those packages:

    >>> from hdmf_zarr_parallel import register_concurrent_reader
    >>> register_concurrent_reader("mylab.io.MyIterator")

An entry names an iterator class by its qualified name (``module.ClassName``; a
subclass matches too) and may carry a predicate that looks at the iterator object,
because whether an iterator is safe often depends on what it reads from. The built-in
entries cover neuroconv's recording and imaging iterators only over sources that read
through memory maps or in-memory arrays, where concurrent reads share no file position:

- ``SpikeInterfaceRecordingDataChunkIterator`` over SpikeInterface's
  ``BinaryRecordingExtractor`` / ``BinaryFolderRecording`` (each ``get_traces`` maps
  the file anew, read-only) and ``NumpyRecording``;
- ``ImagingExtractorDataChunkIterator`` over roiextractors' ``NumpyImagingExtractor``
  and ``NumpyMemmapImagingExtractor``.

Every other source (neo-based extractors, TIFF readers, preprocessing chains) is left
out: its thread safety depends on the file format's reader, and a wrong answer would
return wrong bytes, so those iterators stay serial unless ``concurrent_reads=True``
is passed for the write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]

_LOCK = threading.Lock()
_REGISTRY: dict[str, Predicate | None] = {}


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_concurrent_reader(qualname: str, when: Predicate | None = None) -> None:
    """Declare that iterators of class ``qualname`` (or of a subclass) may be read concurrently;
    with ``when``, only those for which ``when(iterator)`` is true."""
    if not isinstance(qualname, str) or "." not in qualname:
        raise ValueError(f"qualname must be a dotted 'module.ClassName' string, got {qualname!r}")
    if when is not None and not callable(when):
        raise TypeError(f"when must be callable or None, got {type(when).__name__}")
    with _LOCK:
        _REGISTRY[qualname] = when


def unregister_concurrent_reader(qualname: str) -> None:
    """Remove an entry (built-in or registered); unknown names are ignored."""
    with _LOCK:
        _REGISTRY.pop(qualname, None)


def registered_concurrent_reader(iterator: Any) -> bool:
    """Whether a registry entry declares ``iterator`` safe to read from several threads."""
    with _LOCK:
        entries = dict(_REGISTRY)
    for cls in type(iterator).__mro__:
        name = qualified_name(cls)
        if name in entries:
            when = entries[name]
            try:
                return when is None or bool(when(iterator))
            except Exception:  # a predicate that cannot decide means "not known to be safe"
                return False
    return False


def _source_is(attribute: str, *class_names: str) -> Predicate:
    """A predicate: the iterator's ``attribute`` is an instance of one of ``class_names``
    (qualified names; subclasses do not count, since they may read differently)."""

    def check(iterator: Any) -> bool:
        source = getattr(iterator, attribute, None)
        return source is not None and qualified_name(type(source)) in class_names

    return check


_SPIKEINTERFACE_SAFE = (
    "spikeinterface.core.binaryrecordingextractor.BinaryRecordingExtractor",
    "spikeinterface.core.binaryfolder.BinaryFolderRecording",
    "spikeinterface.core.numpyextractors.NumpyRecording",
)
_ROIEXTRACTORS_SAFE = (
    "roiextractors.extractors.numpyextractors.numpyextractors.NumpyImagingExtractor",
    "roiextractors.extractors.memmapextractors.numpymemampextractor.NumpyMemmapImagingExtractor",
)

BUILT_IN = {
    "neuroconv.tools.spikeinterface.spikeinterfacerecordingdatachunkiterator.SpikeInterfaceRecordingDataChunkIterator": (
        _source_is("recording", *_SPIKEINTERFACE_SAFE)
    ),
    "neuroconv.tools.roiextractors.imagingextractordatachunkiterator.ImagingExtractorDataChunkIterator": (
        _source_is("imaging_extractor", *_ROIEXTRACTORS_SAFE)
    ),
}
_REGISTRY.update(BUILT_IN)
