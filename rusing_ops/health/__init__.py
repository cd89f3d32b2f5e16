"""health capability."""
