"""backups capability."""
