"""Community operations: each server's policy, moderation, and the audit log (issue 5)."""
