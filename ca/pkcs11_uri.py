"""RFC 7512 `pkcs11:` URIs naming a CA key in a token, and the PIN they point to.

Plain parsing: importing this loads neither python-pkcs11 nor a PKCS#11 module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlparse

from ca.errors import BadInput, SignerUnavailable

_PATH_ATTRIBUTES = {"token", "object", "id", "type", "manufacturer", "serial", "model",
                    "slot-id", "slot-description", "slot-manufacturer", "library-manufacturer",
                    "library-description", "library-version"}


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI Vouch uses. `pin_value` is kept out of repr and messages."""

    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    slot_id: int | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    text: str = field(default="", repr=False)

    def describe(self) -> str:
        """The URI without any PIN: safe for messages and logs."""
        token = f"token {self.token!r}" if self.token else f"slot {self.slot_id}" if self.slot_id \
            is not None else "the first token"
        key = f"key {self.object!r}" if self.object else f"key id {self.id.hex()}" if self.id \
            else "its only key"
        return f"{key} in {token}"

    def pin(self, fallback: str | None) -> str | None:
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is not None:
            # RFC 7512 gives a URI (file:/p, file:///p); a bare path is accepted too.
            source = self.pin_source
            path = urlparse(source).path if source.startswith("file:") else source
            try:
                return Path(unquote(path)).read_text().rstrip("\r\n")
            except OSError as exc:
                raise SignerUnavailable(f"PIN file {unquote(path)!r} named by pin-source cannot be read: "
                                        f"{exc.strerror}") from None
        return fallback


def is_pkcs11_uri(text: str) -> bool:
    """A URI's scheme is case-insensitive (RFC 3986 3.1), and a value pasted from elsewhere
    may carry whitespace: ' PKCS11:token=…' names a token, never a file of that name."""
    return text.strip().lower().startswith("pkcs11:")


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """RFC 7512 section 2.3: `pkcs11:` path attributes split by ';', query attributes by '&'."""
    if not is_pkcs11_uri(text):
        raise BadInput("a PKCS#11 key must be named by a URI starting with 'pkcs11:'")
    body = text.strip()[len("pkcs11:"):]
    path, _, query = body.partition("?")
    values: dict[str, str | bytes] = {}
    for part, separator, allowed in ((path, ";", _PATH_ATTRIBUTES),
                                     (query, "&", {"module-path", "module-name", "pin-source",
                                                   "pin-value"})):
        for item in filter(None, part.split(separator)):
            name, eq, value = item.partition("=")
            if not eq:
                # Not echoed: a mistyped `pin-value:1234` would put the PIN in the message.
                where = "path" if separator == ";" else "query"
                raise BadInput(f"the PKCS#11 URI has a {where} attribute without '=value'")
            if name not in allowed and not name.startswith("x-"):
                where = "path" if separator == ";" else "query"
                raise BadInput(f"unknown PKCS#11 URI {where} attribute {name!r}: use "
                               + ", ".join(sorted(allowed)))
            if name in values:
                raise BadInput(f"PKCS#11 URI attribute {name!r} is given twice")
            if name == "id":
                values[name] = unquote_to_bytes(value)
            elif name == "pin-source":
                values[name] = value  # a URI itself: decoded once, where it is read
            else:
                values[name] = unquote(value)
    for name, value in values.items():
        plain = value.decode(errors="replace") if isinstance(value, bytes) else value
        if name != "pin-value" and "pin-value" in plain.lower():
            # A mistyped separator put the PIN into a value that errors would quote.
            raise BadInput(f"the PKCS#11 URI has 'pin-value' inside the value of {name!r}: path "
                           "attributes are separated by ';', query attributes by '&', and "
                           "pin-value belongs in the query (after '?')")
    if values.get("type", "private") != "private":
        raise BadInput("the PKCS#11 URI must name a private key (type=private or no type)")
    slot_id = values.get("slot-id")
    if slot_id is not None and not (slot_id.isascii() and slot_id.isdigit()):
        raise BadInput("PKCS#11 URI slot-id must be a number")
    if "pin-value" in values and "pin-source" in values:
        raise BadInput("PKCS#11 URI has both pin-value and pin-source: give one")
    return Pkcs11Uri(
        token=values.get("token"), object=values.get("object"), id=values.get("id"),
        serial=values.get("serial"), slot_id=int(slot_id) if slot_id is not None else None,
        module_path=values.get("module-path"), pin_source=values.get("pin-source"),
        pin_value=values.get("pin-value"), text=text)
