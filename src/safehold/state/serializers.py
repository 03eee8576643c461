"""
Typed collections: how keys and values of a dictionary or queue are stored.

The store keeps keys as text and values as canonical JSON (``docs/state.md``), the
same in the database, the change log and incremental backups. A *serializer* maps
a Python value to JSON data and back; a *key serializer* maps a key to text and
back, **preserving order** (iteration is in the order of the texts)::

    orders = store.dictionary("orders", value=Order)          # a dataclass or pydantic model
    blobs = store.dictionary("blobs", key=int, value=bytes)   # int keys in numeric order
    jobs = store.queue("jobs", value=MySerializer())          # anything with to_json/from_json

``value=`` takes a type (``str``, ``bytes``, a dataclass, a pydantic model, or
``object``/``Any`` for plain JSON) or a ``Serializer``; ``key=`` takes ``str``,
``int``, ``bytes``, ``uuid.UUID`` or a ``KeySerializer``.
"""

from __future__ import annotations

import base64
import dataclasses
import typing
import uuid
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

__all__ = [
    "BytesKeys",
    "BytesValues",
    "DataclassValues",
    "IntKeys",
    "JsonValues",
    "KeySerializer",
    "PydanticValues",
    "Serializer",
    "StrKeys",
    "StrValues",
    "UUIDKeys",
    "key_serializer",
    "value_serializer",
]

T = TypeVar("T")
K = TypeVar("K")
_INT64 = 2**63


@runtime_checkable
class Serializer(Protocol[T]):
    """**Protocol**: turns a value into JSON data (dict, list, str, numbers, None) and back."""

    def to_json(self, value: T) -> Any:
        """The JSON data for *value*; raise ``TypeError``/``ValueError`` if it does not fit."""
        ...

    def from_json(self, data: Any) -> T:
        """The value *data* stands for."""
        ...


@runtime_checkable
class KeySerializer(Protocol[K]):
    """**Protocol**: turns a key into text and back; text order must be key order."""

    def to_key(self, key: K) -> str:
        """The text for *key*; raise ``TypeError``/``ValueError`` if it does not fit."""
        ...

    def from_key(self, text: str) -> K:
        """The key *text* stands for."""
        ...


class JsonValues:
    """Plain JSON values, stored as they are (the default)."""

    def to_json(self, value: Any) -> Any:
        """*value* itself; the store checks that it is JSON."""
        return value

    def from_json(self, data: Any) -> Any:
        """*data* itself."""
        return data


class StrValues:
    """``str`` values."""

    def to_json(self, value: str) -> Any:
        """*value*; anything but a ``str`` is a ``TypeError``."""
        if not isinstance(value, str):
            raise TypeError(f"expected a str value, not {type(value).__name__}")
        return value

    def from_json(self, data: Any) -> str:
        """The string."""
        return str(data)


class BytesValues:
    """``bytes`` values, stored as base64 text (wrap a binary format's output in this)."""

    def to_json(self, value: bytes) -> Any:
        """Base64 of *value*."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"expected a bytes value, not {type(value).__name__}")
        return base64.b64encode(bytes(value)).decode("ascii")

    def from_json(self, data: Any) -> bytes:
        """The bytes."""
        return base64.b64decode(data)


class DataclassValues(typing.Generic[T]):
    """
    Instances of a dataclass, stored as a JSON object of their fields.

    Fields hold JSON values or nested dataclasses (rebuilt from their type hints);
    other field types (datetime, sets, ...) are refused when written. Use a pydantic
    model for richer types.
    """

    def __init__(self, cls: type[T]) -> None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls

    def to_json(self, value: T) -> Any:
        """``dataclasses.asdict(value)``."""
        if not isinstance(value, self.cls):
            raise TypeError(f"expected a {self.cls.__name__}, not {type(value).__name__}")
        return dataclasses.asdict(cast(Any, value))

    def from_json(self, data: Any) -> T:
        """A new instance built from the stored fields."""
        return cast(T, _build(self.cls, data))


class PydanticValues(typing.Generic[T]):
    """Instances of a pydantic model: ``model_dump(mode="json")`` and ``model_validate``."""

    def __init__(self, cls: type[T]) -> None:
        if not (hasattr(cls, "model_validate") and hasattr(cls, "model_dump")):
            raise TypeError(f"{cls!r} is not a pydantic model")
        self.cls = cls

    def to_json(self, value: T) -> Any:
        """The model's JSON-mode dump."""
        if not isinstance(value, self.cls):
            raise TypeError(f"expected a {self.cls.__name__}, not {type(value).__name__}")
        return cast(Any, value).model_dump(mode="json")

    def from_json(self, data: Any) -> T:
        """The validated model."""
        return cast(T, cast(Any, self.cls).model_validate(data))


class StrKeys:
    """``str`` keys, in code point order (the default)."""

    def to_key(self, key: str) -> str:
        """*key*; anything but a ``str`` is a ``TypeError``."""
        if not isinstance(key, str):
            raise TypeError(f"a key must be a str, not {type(key).__name__}")
        return key

    def from_key(self, text: str) -> str:
        """The key."""
        return text


class IntKeys:
    """64-bit signed ``int`` keys, in numeric order (stored as 20 digits, offset by 2**63)."""

    def to_key(self, key: int) -> str:
        """Fixed-width digits of ``key + 2**63``."""
        if not isinstance(key, int) or isinstance(key, bool):
            raise TypeError(f"a key must be an int, not {type(key).__name__}")
        if not -_INT64 <= key < _INT64:
            raise ValueError(f"int key {key} is outside the 64-bit range")
        return f"{key + _INT64:020d}"

    def from_key(self, text: str) -> int:
        """The int."""
        return int(text) - _INT64


class BytesKeys:
    """``bytes`` keys, in byte order (stored as lower-case hex)."""

    def to_key(self, key: bytes) -> str:
        """Hex of *key*."""
        if not isinstance(key, bytes):
            raise TypeError(f"a key must be bytes, not {type(key).__name__}")
        return key.hex()

    def from_key(self, text: str) -> bytes:
        """The bytes."""
        return bytes.fromhex(text)


class UUIDKeys:
    """``uuid.UUID`` keys, stored in their canonical text form (order of that text)."""

    def to_key(self, key: uuid.UUID) -> str:
        """``str(key)``."""
        if not isinstance(key, uuid.UUID):
            raise TypeError(f"a key must be a UUID, not {type(key).__name__}")
        return str(key)

    def from_key(self, text: str) -> uuid.UUID:
        """The UUID."""
        return uuid.UUID(text)


def value_serializer(spec: object) -> Serializer[Any]:
    """
    The serializer for ``value=`` *spec*: a ``Serializer``, or a type to pick one for.

    Raises:
        TypeError: no serializer is known for that type.
    """
    if spec is None or spec is Any or spec is object or spec is dict or spec is list:
        return JsonValues()
    if spec is str:
        return StrValues()
    if spec is bytes:
        return BytesValues()
    if isinstance(spec, type):
        if dataclasses.is_dataclass(spec):
            return DataclassValues(spec)
        if hasattr(spec, "model_validate") and hasattr(spec, "model_dump"):
            return PydanticValues(spec)
    if isinstance(spec, Serializer) and not isinstance(spec, type):
        return spec
    raise TypeError(f"no value serializer for {spec!r}: pass a Serializer")


def key_serializer(spec: object) -> KeySerializer[Any]:
    """
    The key serializer for ``key=`` *spec*: a ``KeySerializer``, or ``str``, ``int``,
    ``bytes`` or ``uuid.UUID``.

    Raises:
        TypeError: no key serializer is known for that type.
    """
    known: dict[object, KeySerializer[Any]] = {
        None: StrKeys(),
        str: StrKeys(),
        int: IntKeys(),
        bytes: BytesKeys(),
        uuid.UUID: UUIDKeys(),
    }
    if spec in known:
        return known[spec]
    if isinstance(spec, KeySerializer) and not isinstance(spec, type):
        return spec
    raise TypeError(f"no key serializer for {spec!r}: pass a KeySerializer")


def _build(cls: type[Any], data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"stored {cls.__name__} is not an object: {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            tp = hints.get(f.name)
            value = data[f.name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
                value = _build(tp, value)
            kwargs[f.name] = value
    return cls(**kwargs)
