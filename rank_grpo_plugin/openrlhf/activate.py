"""Kept for installs whose ``openrlhf.plugins`` entry-point metadata predates :mod:`.register` (reinstall to drop)."""
from .register import register_extensions  # noqa: F401
