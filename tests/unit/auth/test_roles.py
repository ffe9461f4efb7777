import pytest

from app.auth.api_keys import generate_key, parse_prefix
from app.auth.principal import Role

pytestmark = pytest.mark.unit


def test_roles_are_ordered_reader_editor_admin() -> None:
    assert Role.admin.allows(Role.editor) and Role.admin.allows(Role.reader)
    assert Role.editor.allows(Role.reader) and not Role.editor.allows(Role.admin)
    assert not Role.reader.allows(Role.editor)


def test_generated_keys_carry_their_lookup_prefix_and_256_bits() -> None:
    prefix, key = generate_key()
    assert parse_prefix(key) == prefix
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert generate_key()[1] != key
