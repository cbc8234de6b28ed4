"""Fault injection: hostile files, numerical faults, disk faults and bad configuration (issue 9, items 3-6)."""
