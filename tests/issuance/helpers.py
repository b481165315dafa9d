"""Moved to :mod:`tests.factories` (staff accounts and tokens, resident IDs); importable here
while branches written before the move land."""

from tests.factories import PASSWORD, create_staff, resident_id, staff_headers, staff_token

__all__ = ["PASSWORD", "create_staff", "resident_id", "staff_headers", "staff_token"]
