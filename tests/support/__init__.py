"""Test helpers (real local servers, etc.); import as ``tests.support``."""
