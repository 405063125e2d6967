"""The registry of iterator classes known to be safe to read concurrently (neuroconv's, users' own)."""

import threading
import time

import numpy as np
import pytest
import zarr
from hdmf.data_utils import GenericDataChunkIterator

from conftest import make_array, pipeline_write, realistic
from hdmf_zarr_parallel import register_concurrent_reader, unregister_concurrent_reader
from hdmf_zarr_parallel.concurrent_readers import BUILT_IN, registered_concurrent_reader

DATA = realistic((3000, 8), seed=11)
NEUROCONV_RECORDING = (
    "neuroconv.tools.spikeinterface.spikeinterfacerecordingdatachunkiterator",
    "SpikeInterfaceRecordingDataChunkIterator",
)
NEUROCONV_IMAGING = (
    "neuroconv.tools.roiextractors.imagingextractordatachunkiterator",
    "ImagingExtractorDataChunkIterator",
)


def named_class(module: str, name: str, base: type = object, body: dict | None = None) -> type:
    """A class whose qualified name is ``module.name``, as the real package's class has."""
    cls = type(name, (base,), dict(body or {}))
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


class CountingIterator(GenericDataChunkIterator):
    """Thread-safe reads that say nothing about it; counts how many ran at once."""

    def __init__(self, array: np.ndarray, pause: float = 0.03) -> None:
        self.array, self.pause = array, pause
        self._guard = threading.Lock()
        self.active = self.most_at_once = 0
        super().__init__(buffer_shape=(250, array.shape[1]), chunk_shape=(250, array.shape[1]))

    def _get_data(self, selection):
        with self._guard:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(self.pause)
        with self._guard:
            self.active -= 1
        return self.array[selection]

    def _get_maxshape(self):
        return self.array.shape

    def _get_dtype(self):
        return self.array.dtype


def write(iterator, tmp_path):
    store = zarr.storage.LocalStore(tmp_path / "a.zarr")
    array = make_array(store, DATA.shape, DATA.dtype, (250, 8))
    pipeline_write([(array, iterator)], max_workers=4)
    return zarr.open_array(zarr.storage.LocalStore(tmp_path / "a.zarr", read_only=True))[...]


@pytest.fixture
def registered():
    names = []

    def register(cls, when=None):
        name = f"{cls.__module__}.{cls.__qualname__}"
        register_concurrent_reader(name, when)
        names.append(name)

    yield register
    for name in names:
        unregister_concurrent_reader(name)


def test_an_unregistered_iterator_is_read_one_region_at_a_time(tmp_path):
    iterator = CountingIterator(DATA)
    np.testing.assert_array_equal(write(iterator, tmp_path), DATA)
    assert iterator.most_at_once == 1


def test_a_registered_class_and_its_subclasses_are_read_by_several_workers(tmp_path, registered):
    registered(CountingIterator)
    sub = type("Sub", (CountingIterator,), {})
    for cls in (CountingIterator, sub):
        iterator = cls(DATA)
        np.testing.assert_array_equal(write(iterator, tmp_path / cls.__name__), DATA)
        assert iterator.most_at_once > 1


def test_the_iterators_own_declaration_wins_over_the_registry(tmp_path, registered):
    registered(CountingIterator)
    declared_unsafe = type("Unsafe", (CountingIterator,), {"concurrent_reads": False})
    iterator = declared_unsafe(DATA)
    np.testing.assert_array_equal(write(iterator, tmp_path), DATA)
    assert iterator.most_at_once == 1


def test_a_predicate_decides_per_iterator_and_a_failing_one_means_unsafe(registered):
    registered(CountingIterator, when=lambda it: it.pause < 0.1)
    assert registered_concurrent_reader(CountingIterator(DATA, pause=0.01))
    assert not registered_concurrent_reader(CountingIterator(DATA, pause=0.5))
    registered(CountingIterator, when=lambda it: it.missing_attribute)
    assert not registered_concurrent_reader(CountingIterator(DATA))


@pytest.mark.parametrize(
    ("source_module", "source_class", "safe"),
    [
        ("spikeinterface.core.binaryrecordingextractor", "BinaryRecordingExtractor", True),
        ("spikeinterface.core.binaryfolder", "BinaryFolderRecording", True),
        ("spikeinterface.core.numpyextractors", "NumpyRecording", True),
        ("spikeinterface.extractors.neoextractors.openephys", "OpenEphysBinaryRecordingExtractor", False),
        ("spikeinterface.preprocessing.filter", "BandpassFilterRecording", False),
    ],
)
def test_neuroconvs_recording_iterator_is_concurrent_only_over_memory_mapped_sources(source_module, source_class, safe):
    iterator_cls = named_class(*NEUROCONV_RECORDING)
    iterator = iterator_cls()
    iterator.recording = named_class(source_module, source_class)()
    assert registered_concurrent_reader(iterator) is safe


@pytest.mark.parametrize(
    ("source_module", "source_class", "safe"),
    [
        ("roiextractors.extractors.numpyextractors.numpyextractors", "NumpyImagingExtractor", True),
        (
            "roiextractors.extractors.memmapextractors.numpymemampextractor",
            "NumpyMemmapImagingExtractor",
            True,
        ),
        ("roiextractors.extractors.tiffimagingextractors.tiffimagingextractor", "TiffImagingExtractor", False),
    ],
)
def test_neuroconvs_imaging_iterator_is_concurrent_only_over_in_memory_or_memmap_sources(
    source_module, source_class, safe
):
    iterator = named_class(*NEUROCONV_IMAGING)()
    iterator.imaging_extractor = named_class(source_module, source_class)()
    assert registered_concurrent_reader(iterator) is safe


def test_a_subclass_of_a_safe_source_is_not_trusted():
    iterator = named_class(*NEUROCONV_RECORDING)()
    base = named_class("spikeinterface.core.binaryrecordingextractor", "BinaryRecordingExtractor")
    iterator.recording = named_class("mylab.extractors", "PatchedBinary", base)()
    assert not registered_concurrent_reader(iterator)


def test_the_built_in_entries_name_neuroconvs_classes():
    assert set(BUILT_IN) == {".".join(NEUROCONV_RECORDING), ".".join(NEUROCONV_IMAGING)}


@pytest.mark.parametrize(("name", "when", "error"), [("NoModule", None, ValueError), ("a.B", 3, TypeError)])
def test_bad_registrations_are_refused(name, when, error):
    with pytest.raises(error):
        register_concurrent_reader(name, when)
