"""__all__ and the public surface stay in sync (httpx's test_exported_members)."""

from __future__ import annotations

import inspect
import pickle

import streamstore


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(streamstore).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(streamstore.__all__)
    assert len(streamstore.__all__) == len(set(streamstore.__all__))


def test_public_names_look_like_they_live_in_streamstore() -> None:
    for name in streamstore.__all__:
        value = getattr(streamstore, name)
        assert value.__module__ == "streamstore", name


def test_every_public_name_has_a_docstring() -> None:
    for name in streamstore.__all__:
        value = getattr(streamstore, name)
        assert inspect.getdoc(value), f"{name} has no docstring"
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_the_core_names_of_issue_2_are_exported() -> None:
    required = {
        "store_from_reader", "astore_from_reader", "sweep_temp", "StoreResult", "Progress",
        "SizeLimit", "Hook", "StreamStoreError", "HashMismatchError", "PartialWriteError",
        "SizeLimitError", "TooLargeError", "TooSmallError", "SourceError", "StorageError",
        "DiskFullError", "StoragePermissionError", "DestinationExistsError",
    }
    assert required <= set(streamstore.__all__)


def test_version_and_typed_marker() -> None:
    from importlib.resources import files

    assert isinstance(streamstore.__version__, str)
    assert files("streamstore").joinpath("py.typed").is_file()


def test_module_rewrite_keeps_pickling_working() -> None:
    err = streamstore.TooLargeError(limit=1, size=2, dest="/x")
    assert pickle.loads(pickle.dumps(err)).limit == 1
