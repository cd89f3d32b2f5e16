"""runbooks capability."""
