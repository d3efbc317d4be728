"""The audit chain's key in tests that build a store themselves (vouch.audit_key in the product).
Here, not in conftest: worker processes import the test modules, and `conftest` may resolve to
another directory's there."""

AUDIT_KEY = b"test-audit-key-0123456789abcdef0123456789"
