"""ca/pkcs11.py: RFC 7512 `pkcs11:` URI parsing, PIN sources and PIN-free descriptions (no token).

Several tests pin down defects found and fixed in ca/pkcs11.py (double percent-decoding of
pin-source, non-ASCII slot-id digits, PIN echoed from a malformed attribute).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.errors import BadInput, SignerUnavailable
from ca.pkcs11 import Pkcs11Uri, parse_pkcs11_uri

PIN = "S3cretPIN-778"


def refusal(text: str) -> str:
    with pytest.raises(BadInput) as caught:
        parse_pkcs11_uri(text)
    return str(caught.value)


# --- what is parsed -------------------------------------------------------------------------

def test_token_object_and_module_path():
    text = "pkcs11:token=vouch;object=ca-key?module-path=/usr/lib/softhsm/libsofthsm2.so"
    uri = parse_pkcs11_uri(text)
    assert uri.token == "vouch"
    assert uri.object == "ca-key"
    assert uri.module_path == "/usr/lib/softhsm/libsofthsm2.so"
    assert uri.id is None and uri.slot_id is None and uri.serial is None
    assert uri.pin_value is None and uri.pin_source is None
    assert uri.text == text


@pytest.mark.parametrize("text", ["PKCS11:token=vouch;object=ca-key", " pkcs11:token=vouch;object=ca-key\n",
                                  "Pkcs11:token=vouch;object=ca-key"])
def test_the_scheme_is_case_insensitive_and_whitespace_is_ignored(text):
    from ca.pkcs11_uri import is_pkcs11_uri

    assert is_pkcs11_uri(text)
    uri = parse_pkcs11_uri(text)
    assert (uri.token, uri.object) == ("vouch", "ca-key")


def test_id_is_percent_decoded_to_bytes():
    uri = parse_pkcs11_uri("pkcs11:id=%01%02%ff%FE")
    assert uri.id == b"\x01\x02\xff\xfe"
    assert isinstance(uri.id, bytes)


def test_id_mixes_literal_and_encoded_bytes():
    # RFC 7512 section 3's own example id: %69 is 'i', %3E is '>', %5C is '\'.
    uri = parse_pkcs11_uri("pkcs11:id=%69%95%3E%5C%F4%BD%EC%91")
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert parse_pkcs11_uri("pkcs11:id=ab%00").id == b"ab\x00"


def test_percent_decoding_of_text_attributes():
    uri = parse_pkcs11_uri("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my%20key%3Bx"
                           "?module-path=/opt/my%20hsm/lib.so")
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.object == "my key;x"  # an encoded ';' does not split the path
    assert uri.module_path == "/opt/my hsm/lib.so"


def test_utf8_percent_encoding():
    assert parse_pkcs11_uri("pkcs11:object=cl%C3%A9").object == "clé"


def test_slot_id_and_serial():
    uri = parse_pkcs11_uri("pkcs11:slot-id=1529812315;serial=9c0e0d8b5c1d1aa7")
    assert uri.slot_id == 1529812315
    assert isinstance(uri.slot_id, int)
    assert uri.serial == "9c0e0d8b5c1d1aa7"
    assert parse_pkcs11_uri("pkcs11:slot-id=0").slot_id == 0


def test_type_private_is_accepted():
    assert parse_pkcs11_uri("pkcs11:object=k;type=private").object == "k"


def test_other_rfc_path_attributes_and_vendor_extensions_are_accepted():
    uri = parse_pkcs11_uri("pkcs11:manufacturer=Snake%20Oil,%20Inc.;model=1.0;token=t;"
                           "slot-description=Sun%20Metaslot;library-version=1.23;x-vendor=1")
    assert uri.token == "t"


def test_empty_uri_and_empty_parts():
    assert parse_pkcs11_uri("pkcs11:") == Pkcs11Uri(text="pkcs11:")
    uri = parse_pkcs11_uri("pkcs11:token=a;;object=b;?")
    assert (uri.token, uri.object) == ("a", "b")


def test_pin_value():
    uri = parse_pkcs11_uri(f"pkcs11:token=t?pin-value={PIN}")
    assert uri.pin_value == PIN
    assert uri.pin("fallback") == PIN


def test_pin_value_is_percent_decoded():
    assert parse_pkcs11_uri("pkcs11:token=t?pin-value=a%26b%20c").pin(None) == "a&b c"


def test_no_pin_in_uri_uses_the_fallback():
    uri = parse_pkcs11_uri("pkcs11:token=t")
    assert uri.pin("from-env") == "from-env"
    assert uri.pin(None) is None


def test_pin_source_file_path(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    uri = parse_pkcs11_uri(f"pkcs11:token=t?pin-source={pin_file}")
    assert uri.pin_source == str(pin_file)
    assert uri.pin_value is None
    assert uri.pin("ignored-fallback") == PIN  # trailing newline stripped, fallback not used


def test_pin_source_strips_crlf_only(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(" spaced pin \r\n")
    assert parse_pkcs11_uri(f"pkcs11:?pin-source={pin_file}").pin(None) == " spaced pin "


def test_pin_source_file_uri_with_authority(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    assert parse_pkcs11_uri(f"pkcs11:token=t?pin-source=file://{pin_file}").pin(None) == PIN


def test_pin_source_with_percent_encoded_space(tmp_path):
    pin_file = tmp_path / "my pin"
    pin_file.write_text(PIN + "\n")
    encoded = str(pin_file).replace(" ", "%20")
    assert parse_pkcs11_uri(f"pkcs11:token=t?pin-source={encoded}").pin(None) == PIN
    assert parse_pkcs11_uri(f"pkcs11:token=t?pin-source=file://{encoded}").pin(None) == PIN


def test_pin_source_file_uri_without_authority_rfc7512_example(tmp_path):
    # RFC 7512 section 3's own example is pin-source=file:/etc/token_pin (no "//").
    pin_file = tmp_path / "token_pin"
    pin_file.write_text(PIN + "\n")
    assert parse_pkcs11_uri(f"pkcs11:token=t?pin-source=file:{pin_file}").pin(None) == PIN


def test_pin_source_file_uri_with_localhost(tmp_path):  # RFC 8089 section 2
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    assert parse_pkcs11_uri(f"pkcs11:?pin-source=file://localhost{pin_file}").pin(None) == PIN


def test_pin_source_path_with_hash_and_question_mark(tmp_path):
    for name in ("pin#1", "pin?2"):
        (tmp_path / name).write_text(PIN + name[-1])
        encoded = str(tmp_path / name).replace("#", "%23").replace("?", "%3F")
        assert parse_pkcs11_uri(f"pkcs11:?pin-source={encoded}").pin(None) == PIN + name[-1]


def test_pin_source_is_percent_decoded_once(tmp_path):
    pin_file = tmp_path / "pin%41"
    pin_file.write_text(PIN)
    encoded = str(pin_file).replace("%", "%25")
    uri = parse_pkcs11_uri(f"pkcs11:?pin-source={encoded}")
    assert uri.pin(None) == PIN


@pytest.mark.parametrize("name", ["pin#1", "pin?2"])
def test_pin_source_file_uri_with_hash_or_question_mark(tmp_path, name):
    (tmp_path / name).write_text(PIN)
    encoded = str(tmp_path / name).replace("#", "%23").replace("?", "%3F")
    assert parse_pkcs11_uri(f"pkcs11:?pin-source=file:{encoded}").pin(None) == PIN


def test_unreadable_pin_source_is_signer_unavailable(tmp_path):
    missing = tmp_path / "no-such-pin"
    uri = parse_pkcs11_uri(f"pkcs11:token=t?pin-source={missing}")
    with pytest.raises(SignerUnavailable) as caught:
        uri.pin("fallback")
    assert str(caught.value) == (f"PIN file {str(missing)!r} named by pin-source cannot be read: "
                                 "No such file or directory")


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["token=vouch;object=ca", "pkcs11", "pkcs11;token=a",
                                  "file:/etc/ca_key", "/etc/ca_key", ""])  # " pkcs11:…" is one: issue 12
def test_not_a_pkcs11_uri(text):
    assert "starting with 'pkcs11:'" in refusal(text)


def test_unknown_path_attribute_typo():
    message = refusal("pkcs11:tokne=vouch;object=ca")
    assert "unknown PKCS#11 URI path attribute 'tokne'" in message
    assert "token" in message.split(":", 1)[1]  # the valid names are listed


def test_query_attribute_in_the_path_is_unknown():
    assert "unknown PKCS#11 URI path attribute 'module-path'" in refusal(
        "pkcs11:token=a;module-path=/lib.so")


def test_path_attribute_in_the_query_is_unknown():
    message = refusal("pkcs11:token=a?object=b")
    assert "unknown PKCS#11 URI query attribute 'object'" in message
    assert "module-path" in message and "pin-source" in message


def test_unknown_query_attribute():
    assert "query attribute 'pin-valeu'" in refusal(f"pkcs11:token=a?pin-valeu={PIN}")


@pytest.mark.parametrize("text, name", [("pkcs11:token", "token"),
                                        ("pkcs11:token=a;object", "object"),
                                        ("pkcs11:token=a?module-path", "module-path")])
def test_attribute_without_value(text, name):
    message = refusal(text)
    assert "attribute without '=value'" in message
    assert ("query" if "?" in text else "path") in message


@pytest.mark.parametrize("text, name", [("pkcs11:token=a;token=b", "token"),
                                        ("pkcs11:object=a;token=t;object=a", "object"),
                                        ("pkcs11:id=%01;id=%01", "id"),
                                        ("pkcs11:token=t?module-path=/a&module-path=/b", "module-path"),
                                        (f"pkcs11:token=t?pin-value={PIN}&pin-value=x", "pin-value")])
def test_duplicated_attribute(text, name):
    message = refusal(text)
    assert f"attribute {name!r} is given twice" in message
    assert PIN not in message


@pytest.mark.parametrize("kind", ["public", "cert", "secret-key", "data", "PRIVATE"])
def test_type_other_than_private(kind):
    assert "must name a private key" in refusal(f"pkcs11:object=k;type={kind}")


@pytest.mark.parametrize("value", ["one", "1a", "-1", "+1", "", "1.0", "0x10", "1%20"])
def test_non_numeric_slot_id(value):
    assert "slot-id must be a number" in refusal(f"pkcs11:slot-id={value}")


@pytest.mark.parametrize("value", ["%C2%B2", "%D9%A1"])
def test_non_ascii_digit_slot_id(value):
    assert "slot-id must be a number" in refusal(f"pkcs11:slot-id={value}")


def test_both_pin_value_and_pin_source():
    message = refusal(f"pkcs11:token=t?pin-value={PIN}&pin-source=/etc/pin")
    assert "both pin-value and pin-source" in message
    assert PIN not in message


# --- no PIN in descriptions ---------------------------------------------------------------

def test_describe_and_repr_never_hold_the_pin():
    uri = parse_pkcs11_uri(f"pkcs11:token=vouch;object=ca?module-path=/lib.so&pin-value={PIN}")
    assert uri.pin_value == PIN
    assert uri.describe() == "key 'ca' in token 'vouch'"
    assert PIN not in repr(uri)
    assert PIN not in str(uri)
    assert "token='vouch'" in repr(uri) and "object='ca'" in repr(uri)


def test_describe_forms():
    assert parse_pkcs11_uri("pkcs11:slot-id=3;id=%0a%ff").describe() == "key id 0aff in slot 3"
    assert parse_pkcs11_uri("pkcs11:slot-id=0").describe() == "its only key in slot 0"
    assert parse_pkcs11_uri("pkcs11:").describe() == "its only key in the first token"


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                      exclude_characters="%&;?#"), min_size=1, max_size=30))
def test_describe_and_repr_never_hold_any_pin_value(tail):
    pin = "~~" + tail  # "~~" appears nowhere else, so a hit can only be the PIN
    uri = parse_pkcs11_uri(f"pkcs11:token=tok;object=key?pin-value={pin}")
    assert uri.pin_value == pin
    assert pin not in uri.describe()
    assert pin not in repr(uri)


def test_malformed_pin_attribute_is_not_echoed():
    assert PIN not in refusal(f"pkcs11:token=t?pin-value:{PIN}")


@pytest.mark.parametrize("text", [
    f"pkcs11:token=t&pin-value={PIN};object=ca",
    f"pkcs11:token=t;object=ca?module-path=/m.so;pin-value={PIN}",
    f"pkcs11:token=t;object=ca?module-path=/m.so?pin-value={PIN}",
    f"pkcs11:token=t;id=%01&PIN-VALUE={PIN}",
    f"pkcs11:token=t?pin-source=/p;pin-value={PIN}",
])
def test_a_pin_value_inside_another_value_is_refused_unechoed(text):
    """Errors quote token, object, module path and id (as hex): a PIN must not ride along."""
    message = refusal(text)
    assert "has 'pin-value' inside the value of" in message
    assert PIN not in message and PIN.encode().hex() not in message
