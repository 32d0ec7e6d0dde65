"""One msgpack value per frame, and the ROUTER reply envelope.

Two jobs live here:

* :func:`pack` / :func:`unpack` turn one Python value into one frame and back. Bytes from the
  network are untrusted, so :func:`unpack` checks the size first, then decodes, and turns every
  way decoding can fail into a :class:`FrameError` with a short ``reason``. No msgpack exception
  leaves this module.
* :func:`split_envelope` separates the routing frames a ROUTER socket prepends (the identity,
  plus the empty delimiter a REQ peer sends) from the body, so a reply is simply
  ``envelope + [reply_bytes]`` whatever kind of socket the peer used.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

__all__ = ["FrameError", "pack", "unpack", "unpack_map", "split_envelope"]


class FrameError(ValueError):
    """A frame that cannot be decoded into what the caller asked for.

    This is bad input from outside (a peer or a client): the owner answers with an error or
    drops the message, and keeps serving.

    Attributes:
        reason: a short, stable, machine-readable cause, one of ``"too large"``,
            ``"invalid msgpack"``, ``"trailing bytes"``, ``"not a map"``, ``"not bytes"``,
            ``"empty message"``.
        detail: optional human-readable detail (may be ``None``).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep .reason/.detail across pickling (e.g. to a process pool)
        return (type(self), (self.reason, self.detail))


# A Packer keeps an internal buffer, so one instance must not be used by two threads at once
# (the node loop and a client in the user's thread both pack). One Packer per thread keeps the
# speed of reuse without a lock.
_local = threading.local()


def _packer() -> msgpack.Packer:
    try:
        return _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
        return packer


def pack(obj: Any) -> bytes:
    """Encode one value as msgpack (``bytes`` as bin, ``str`` as str).

    Args:
        obj: any value msgpack can encode (None, bool, int, float, str, bytes, list, tuple,
            dict, ...).

    Returns:
        The encoded frame.

    Raises:
        TypeError: ``obj`` (or something inside it) has no msgpack encoding. This is local
            misuse, so it is not turned into a :class:`FrameError`.
        ValueError: an integer is out of msgpack's range (also local misuse).
    """
    return _packer().pack(obj)


def unpack(data: bytes, max_bytes: int | None = None) -> Any:
    """Decode exactly one msgpack value from an untrusted frame.

    Strings are decoded as UTF-8 ``str``, bin as ``bytes``, arrays as ``list``; map keys may be
    any hashable msgpack value (``strict_map_key=False``).

    Args:
        data: the frame (``bytes``, ``bytearray`` or ``memoryview``).
        max_bytes: refuse frames longer than this many bytes before decoding anything.
            ``None`` means no limit beyond the frame itself (msgpack never allocates more
            than the frame's size allows, so a forged length header cannot blow up memory).

    Returns:
        The decoded value.

    Raises:
        FrameError: ``reason`` is ``"not bytes"``, ``"too large"``, ``"invalid msgpack"``
            (garbage, truncated input, bad UTF-8, unhashable map key, nesting too deep) or
            ``"trailing bytes"`` (more than one value in the frame).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError("not bytes", type(data).__name__)
    size = memoryview(data).nbytes
    if max_bytes is not None and size > max_bytes:
        raise FrameError("too large", f"{size} bytes > limit {max_bytes}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise FrameError("trailing bytes") from None
    except Exception as exc:  # FormatError, StackError, ValueError, UnicodeDecodeError, TypeError...
        raise FrameError("invalid msgpack", f"{type(exc).__name__}: {exc}") from None


def unpack_map(data: bytes, max_bytes: int | None = None) -> dict:
    """Like :func:`unpack`, but the top-level value must be a map.

    Returns:
        The decoded ``dict``.

    Raises:
        FrameError: as :func:`unpack`, or ``reason == "not a map"``.
    """
    value = unpack(data, max_bytes)
    if not isinstance(value, dict):
        raise FrameError("not a map", type(value).__name__)
    return value


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a message received on a ROUTER socket into ``(envelope, body)``.

    Rule: frame 0 is always routing (the identity the ROUTER prepended). If an empty frame
    appears after it, the envelope is everything up to and including the first such empty
    frame; otherwise the envelope is frame 0 alone. The body is the rest.

    What that means for the usual peers (zguide ch. 3, "The Extended Reply Envelope"):

    =====================================  ======================  ============
    peer sends                             envelope                body
    =====================================  ======================  ============
    REQ: ``[body]``                        ``[id, b""]``           ``[body]``
    DEALER: ``[body]``                     ``[id]``                ``[body]``
    DEALER: ``[b"", body]`` (REQ-style)    ``[id, b""]``           ``[body]``
    via a ROUTER/DEALER proxy              ``[id2, id1, b""]``     ``[body]``
    =====================================  ======================  ============

    Replying is ``sock.send_multipart(envelope + [reply])``, which reaches REQ and DEALER
    peers alike. A DEALER peer whose body starts with an empty frame will have that frame
    taken as a delimiter; the protocols built on this layer send non-empty bodies.

    Args:
        frames: the frames from ``recv_multipart()`` on a ROUTER.

    Returns:
        ``(envelope, body)``; ``body`` may be empty if the peer sent nothing after the envelope.

    Raises:
        FrameError: ``reason == "empty message"`` if ``frames`` is empty.
    """
    if not frames:
        raise FrameError("empty message")
    n = len(frames)
    if type(frames) is list:  # the two usual shapes first, one request at a time on a busy server
        if n == 3 and not frames[1]:  # from a REQ: [id, "", body]
            return frames[:2], frames[2:]
        if n == 4 and not frames[2] and frames[1]:  # a DEALER's [request id, "", body]
            return frames[:3], frames[3:]
    for i in range(1, n):
        if len(frames[i]) == 0:
            return list(frames[: i + 1]), list(frames[i + 1 :])
    return list(frames[:1]), list(frames[1:])
